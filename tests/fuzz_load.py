"""Fuzz ``fastsr.load`` under an address-space limit (run by tests/test_reliability.py in a child process).

Every example -- mutated bytes of real fastsr (safetensors, torch zip), official-layout (torch zip and the
legacy pre-1.6 format the official files use) and BasicSR-layout files, an OpenCV-style EDSR ``.pb``, and
fastsr files whose stored config is mutated -- must either load or raise ``CheckpointError`` within
``TIME_LIMIT_S`` seconds, with the address space capped at ``ADDRESS_SPACE`` bytes, so an allocation a file
provokes fails instead of taking the machine.

Usage: ``python tests/fuzz_load.py WORKDIR [MAX_EXAMPLES]``; exit status 0 when every example held.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import warnings
from pathlib import Path

ADDRESS_SPACE = 6 << 30  # 6 GiB: torch's own mappings fit, a file-provoked multi-GB allocation does not
TIME_LIMIT_S = 5.0  # per example; a legitimate load of these 2-block, 8-feature networks takes milliseconds


def _make_files(work: Path) -> dict[str, bytes]:
    import torch
    from safetensors.torch import save_file

    import fastsr
    from fastsr.models import create

    model = create("edsr-baseline-x2", n_resblocks=2, n_feats=8)
    fastsr.save(model, work / "fastsr.safetensors")
    fastsr.save(create("mdsr-baseline", n_resblocks=1, n_feats=8), work / "fastsr-mdsr.pt")
    state = model.state_dict()
    torch.save(state, work / "official.pt")
    torch.save(state, work / "official-legacy.pt", _use_new_zipfile_serialization=False)
    basicsr = {"conv_first.weight": state["head.0.weight"], "conv_first.bias": state["head.0.bias"]}
    for i in range(2):
        for j, conv in ((0, "conv1"), (2, "conv2")):
            basicsr[f"body.{i}.{conv}.weight"] = state[f"body.{i}.body.{j}.weight"]
            basicsr[f"body.{i}.{conv}.bias"] = state[f"body.{i}.body.{j}.bias"]
    basicsr.update({"conv_after_body.weight": state["body.2.weight"], "conv_after_body.bias": state["body.2.bias"],
                    "upsample.0.weight": state["tail.0.0.weight"], "upsample.0.bias": state["tail.0.0.bias"],
                    "conv_last.weight": state["tail.1.weight"], "conv_last.bias": state["tail.1.bias"]})
    torch.save({"params_ema": basicsr}, work / "basicsr.pth")
    save_file({k: v.contiguous() for k, v in basicsr.items()}, work / "basicsr.safetensors")
    from test_opencv_pb import EDSRGraph  # (tests/ is this script's folder) an OpenCV-style EDSR GraphDef

    (work / "opencv-edsr.pb").write_bytes(EDSRGraph(blocks=1, feats=4).bytes())
    return {p.name: p.read_bytes() for p in sorted(work.iterdir())}


def main() -> int:
    work = Path(sys.argv[1])
    max_examples = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    work.mkdir(parents=True, exist_ok=True)
    originals = _make_files(work)
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    warnings.simplefilter("ignore")  # torch warns about odd pickle protocols in mutated files

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from safetensors import safe_open
    from safetensors.torch import save_file

    import fastsr
    from fastsr.checkpoint import CheckpointError

    names = sorted(originals)
    with safe_open(str(work / "fastsr.safetensors"), "pt") as f:
        base_meta = dict(f.metadata())
        base_tensors = {k: f.get_tensor(k) for k in f.keys()}
    base_config = json.loads(base_meta["config"])
    case = work / "case"

    def attempt(path: Path, what: str) -> None:
        start = time.perf_counter()
        try:
            fastsr.load(path)
        except CheckpointError:
            pass
        except BaseException as e:  # anything else is a defect: report the example
            raise AssertionError(f"{what}: {type(e).__name__}: {str(e)[:300]}") from e
        elapsed = time.perf_counter() - start
        assert elapsed < TIME_LIMIT_S, f"{what}: took {elapsed:.1f} s"

    @st.composite
    def mutated_bytes(draw):
        name = draw(st.sampled_from(names))
        data = bytearray(originals[name])
        n = len(data)
        # Headers live at both ends: safetensors' JSON and the pickle at the start, the zip directory at the end.
        where = st.one_of(st.integers(0, min(n, 4096) - 1), st.integers(max(0, n - 4096), n - 1), st.integers(0, n - 1))
        for pos in draw(st.lists(where, min_size=1, max_size=8)):
            data[pos] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            cut = draw(st.integers(0, n))
            data = data[:cut] + draw(st.binary(max_size=16)) + data[cut + draw(st.integers(0, 64)):]
        return name, bytes(data)

    json_values = st.one_of(st.integers(-2, 2**63), st.floats(allow_nan=True), st.text(max_size=8), st.none(),
                            st.booleans(), st.lists(st.integers(-1, 10**9), max_size=6), st.just(3000),
                            st.just(200_000), st.just(20_000_000))

    @st.composite
    def mutated_configs(draw):
        config = dict(base_config)
        for key in draw(st.lists(st.sampled_from([*config, "scales", "scale", "extra"]), min_size=1, max_size=3)):
            if draw(st.booleans()) and key in config:
                config[key] = draw(json_values)
            elif key in config and draw(st.booleans()):
                del config[key]
            else:
                config[key] = draw(json_values)
        return config

    options = dict(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                   suppress_health_check=list(HealthCheck))

    @settings(**options)
    @given(mutated_bytes())
    def fuzz_bytes(example):
        name, data = example
        path = case.with_suffix(Path(name).suffix)
        path.write_bytes(data)
        attempt(path, f"mutated {name}")

    @settings(**options)
    @given(mutated_configs())
    def fuzz_configs(config):
        path = case.with_suffix(".safetensors")
        try:
            text = json.dumps(config)
        except ValueError:
            text = str(config)
        save_file(base_tensors, path, metadata={**base_meta, "config": text})
        attempt(path, f"config {text[:200]}")

    fuzz_bytes()
    fuzz_configs()
    print(f"fuzz_load: {2 * max_examples} examples held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
