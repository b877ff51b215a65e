"""Render benchmark results (``benchmarks/results/*.json``) as a Markdown table and a PNG chart.

    python benchmarks/render.py [RESULTS.json ...] [--png benchmarks/results/chart.png]

Prints the table (paste it into the README); the chart has one panel per group: latency bars (median,
with p20 / p80 whiskers) or memory bars. Needs matplotlib for the chart (``pip install matplotlib``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def load(paths: list[Path]) -> list[tuple[dict, list[dict]]]:
    return [(d["machine"], d["results"]) for d in (json.loads(p.read_text()) for p in paths)]


def table(machine: dict, rows: list[dict]) -> str:
    lines = [f"Measured on {machine['device']}, {machine['date']}; torch {machine['torch']}, "
             f"triton {machine.get('triton')}.", "",
             "| case | implementation | median | vs baseline | GFLOP/s (share of GEMM rate) | peak memory | vs baseline |",
             "|---|---|---|---|---|---|---|"]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    for group, items in groups.items():
        base = next((i for i in items if i.get("baseline")), items[0])
        for i in items:
            t = f"{i['median_s'] * 1e3:.1f} ms" if "median_s" in i else ""
            speed = f"{base['median_s'] / i['median_s']:.2f}x" if "median_s" in i and "median_s" in base else ""
            mem = f"{i['peak_bytes'] / 2**20:.0f} MiB" if "peak_bytes" in i else ""
            rel = f"{i['peak_bytes'] / base['peak_bytes']:.2f}" if "peak_bytes" in i and "peak_bytes" in base else ""
            if "skipped" in i:
                t = f"skipped: {i['skipped']}"
            rate = f"{i['gflops']:.0f}" if "gflops" in i else ""
            if "gemm_fraction" in i:
                rate += f" ({i['gemm_fraction']:.0%} of {i.get('precision', '')})"
            lines.append(f"| {group} | {i['name']} | {t} | {speed} | {rate} | {mem} | {rel} |")
    return "\n".join(lines)


PEER_COLUMNS = ["reference", "fastsr torch fp32", "onnxruntime", "openvino f32", "opencv dnn",
                "fastsr torch bf16", "openvino bf16"]


def peers_table(machine: dict, rows: list[dict]) -> str:
    """The CPU side-by-side (benchmarks/test_cpu_peers.py) as one row per case: each implementation's median
    with its effective GFLOP/s, then fastsr against the fastest peer of its precision class."""
    cases: dict[str, dict[str, dict]] = {}
    for r in rows:
        if "precision" in r or ("skipped" in r and r["group"] in cases):
            cases.setdefault(r["group"], {})[r["name"]] = r
    if not cases:
        return ""
    gemm = {r["name"]: r["gflops"] for r in rows if r["group"].startswith("machine: dense GEMM")}
    lines = [f"Measured on {machine['device']}, {machine['date']}; torch {machine['torch']}"
             + "".join(f", {k} {machine[k]}" for k in ("onnxruntime", "openvino", "opencv") if machine.get(k))
             + ". Median ms (effective GFLOP/s); dense GEMM rate "
             + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in gemm.items()) + ".", "",
             "| case | " + " | ".join(PEER_COLUMNS) + " | fastsr fp32 vs best fp32 peer | fastsr bf16 vs openvino bf16 |",
             "|---|" + "---|" * (len(PEER_COLUMNS) + 2)]
    for group, items in cases.items():
        cells = []
        for name in PEER_COLUMNS:
            i = items.get(name)
            if i is None or "median_s" not in i:
                cells.append("—" if i is None else "skipped")
                continue
            cells.append(f"{i['median_s'] * 1e3:.0f} ({i['gflops']:.0f})")

        def versus(mine: str, peers: list[str]) -> str:
            if mine not in items or "median_s" not in items[mine]:
                return "—"
            timed = [items[p] for p in peers if p in items and "median_s" in items[p]]
            if not timed:
                return "—"
            best = min(timed, key=lambda i: i["median_s"])
            return f"{best['median_s'] / items[mine]['median_s']:.2f}x ({best['name']})"

        lines.append(f"| {group.split(', CPU')[0]} | " + " | ".join(cells) + " | "
                     + versus("fastsr torch fp32", ["onnxruntime", "openvino f32", "opencv dnn"]) + " | "
                     + versus("fastsr torch bf16", ["openvino bf16"]) + " |")
    return "\n".join(lines)


def chart(runs: list[tuple[dict, list[dict]]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: list[tuple[str, list[dict]]] = []
    for machine, rows in runs:
        by: dict[str, list[dict]] = {}
        for r in rows:
            by.setdefault(r["group"], []).append(r)
        for g, items in by.items():
            items = [i for i in items if "median_s" in i or "peak_bytes" in i]  # plottable rows only
            if items:
                groups.append((f"{g}\n({machine['device']})", items))
    fig, axes = plt.subplots(len(groups), 1, figsize=(9, 1.6 + 0.45 * sum(len(i) for _, i in groups)), squeeze=False)
    for ax, (title, items) in zip(axes[:, 0], groups):
        names = [i["name"] for i in items]
        if all("median_s" in i for i in items):
            vals = [i["median_s"] * 1e3 for i in items]
            err = [[v - i.get("p20_s", i["median_s"]) * 1e3 for v, i in zip(vals, items)],
                   [i.get("p80_s", i["median_s"]) * 1e3 - v for v, i in zip(vals, items)]]
            ax.barh(names, vals, xerr=err, color="tab:blue")
            ax.set_xlabel("latency (ms, median, p20-p80)")
        else:
            vals = [i.get("peak_bytes", 0) / 2**20 for i in items]
            ax.barh(names, vals, color="tab:orange")
            ax.set_xlabel("memory (MiB)")
        ax.invert_yaxis()
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="*", type=Path)
    parser.add_argument("--png", type=Path, help="write the chart here")
    args = parser.parse_args(argv)
    paths = args.results or sorted(RESULTS.glob("*.json"))
    if not paths:
        raise SystemExit(f"no results in {RESULTS}: run `python -m pytest benchmarks` first")
    runs = load(paths)
    print("\n\n".join(t for m, rows in runs for t in (peers_table(m, rows), table(m, rows)) if t))
    if args.png:
        chart(runs, args.png)


if __name__ == "__main__":
    main()
