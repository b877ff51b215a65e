"""The per-op backend choice (fastsr.engine.autotune) without a GPU: selection with a fake timer, the disk
cache (hits, keying by device and versions, corrupt / stale / unwritable files), and the tuning cost."""

from __future__ import annotations

import json
import os

import pytest

from fastsr.engine.autotune import Autotuner, OpKey, default_cache_path, environment_key

VERSIONS = {"torch": "2.11.0", "triton": "3.6.0", "fastsr": "0.1.0"}
KEY = OpKey(n=1, h=270, w=480, c_in=64, c_out=64, ksize=3, dtype="fp16", epilogue="relu")


class FakeTimer:
    """Seconds per candidate from a table; counts the calls."""

    def __init__(self, seconds: dict[str, float]):
        self.seconds = seconds
        self.calls: list[str] = []

    def __call__(self, fn):
        name = fn()
        self.calls.append(name)
        if self.seconds[name] is None:
            raise RuntimeError("out of shared memory")
        return self.seconds[name]


def candidates(*names):
    return {name: (lambda n=name: n) for name in names}


def tuner(tmp_path, timer, device="NVIDIA H100 80GB HBM3", versions=VERSIONS, **kw):
    return Autotuner(device, versions, timer, cache_path=tmp_path / "autotune.json", **kw)


def test_fastest_candidate_wins_and_is_cached(tmp_path):
    timer = FakeTimer({"triton-128x64": 2e-4, "triton-128x128": 3e-4, "cudnn": 2.5e-4})
    t = tuner(tmp_path, timer)
    assert t.choose(KEY, candidates("triton-128x64", "triton-128x128", "cudnn")) == "triton-128x64"
    assert timer.calls == ["triton-128x64", "triton-128x128", "cudnn"] and t.tuned == 1
    # Same process, same key: no timing again. A new process reads the choice from disk.
    assert t.choose(KEY, candidates("triton-128x64", "triton-128x128", "cudnn")) == "triton-128x64"
    again = FakeTimer({})
    assert tuner(tmp_path, again).choose(KEY, candidates("triton-128x64", "cudnn")) == "triton-128x64"
    assert again.calls == []
    saved = json.loads((tmp_path / "autotune.json").read_text())
    assert saved["environment"] == environment_key("NVIDIA H100 80GB HBM3", VERSIONS)
    assert saved["entries"][KEY.text()]["seconds"] == {"triton-128x64": 2e-4, "triton-128x128": 3e-4, "cudnn": 2.5e-4}


def test_ties_go_to_the_first_candidate_and_failures_are_skipped(tmp_path):
    t = tuner(tmp_path, FakeTimer({"a": 1.0, "b": 1.0, "c": None}), persist=False)
    assert t.choose(KEY, candidates("c", "a", "b")) == "a"
    with pytest.raises(RuntimeError, match="every candidate failed"):
        tuner(tmp_path, FakeTimer({"c": None}), persist=False).choose(KEY, candidates("c"))
    with pytest.raises(ValueError, match="no candidates"):
        t.choose(KEY, {})
    assert not (tmp_path / "autotune.json").exists()  # persist=False writes nothing


def test_keys_separate_shapes_devices_and_versions(tmp_path):
    tuner(tmp_path, FakeTimer({"triton": 1.0, "cudnn": 2.0})).choose(KEY, candidates("triton", "cudnn"))
    # Another shape on the same setup: tuned, and both kept.
    other = OpKey(n=1, h=360, w=640, c_in=64, c_out=64, ksize=3, dtype="fp16", epilogue="relu")
    t = tuner(tmp_path, FakeTimer({"triton": 3.0, "cudnn": 2.0}))
    assert t.choose(other, candidates("triton", "cudnn")) == "cudnn"
    assert t.cached(KEY) == "triton"
    # Another device or another triton: the whole cache is stale, re-tuned and rewritten for the new setup.
    for device, versions in (("NVIDIA H200", VERSIONS), ("NVIDIA H100 80GB HBM3", {**VERSIONS, "triton": "3.7.0"})):
        timer = FakeTimer({"triton": 5.0, "cudnn": 1.0})
        fresh = tuner(tmp_path, timer, device=device, versions=versions)
        assert fresh.cached(KEY) is None and fresh.choose(KEY, candidates("triton", "cudnn")) == "cudnn"
        saved = json.loads((tmp_path / "autotune.json").read_text())
        assert saved["environment"] == environment_key(device, versions) and list(saved["entries"]) == [KEY.text()]


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00", b"[]", b'{"format": 99, "entries": {}}',
                                     b'{"format": 1, "environment": "x", "entries": []}'])
def test_corrupt_or_foreign_cache_is_ignored_and_rewritten(tmp_path, content):
    path = tmp_path / "autotune.json"
    path.write_bytes(content)
    timer = FakeTimer({"triton": 1.0, "cudnn": 2.0})
    assert tuner(tmp_path, timer).choose(KEY, candidates("triton", "cudnn")) == "triton"
    assert timer.calls == ["triton", "cudnn"]
    assert json.loads(path.read_text())["entries"][KEY.text()]["choice"] == "triton"


def test_cached_choice_that_is_no_longer_offered_is_retuned(tmp_path):
    tuner(tmp_path, FakeTimer({"fused-block": 1.0, "cudnn": 2.0})).choose(KEY, candidates("fused-block", "cudnn"))
    timer = FakeTimer({"triton": 3.0, "cudnn": 2.0})
    assert tuner(tmp_path, timer).choose(KEY, candidates("triton", "cudnn")) == "cudnn" and timer.calls


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_cache_is_not_fatal(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    t = Autotuner("dev", VERSIONS, FakeTimer({"a": 1.0}), cache_path=folder / "sub" / "autotune.json")
    assert t.choose(KEY, candidates("a")) == "a"


def test_unwritable_cache_location_is_not_fatal(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    t = Autotuner("dev", VERSIONS, FakeTimer({"a": 1.0}), cache_path=blocker / "autotune.json")
    assert t.choose(KEY, candidates("a")) == "a" and t.cached(KEY) == "a"


def test_tuning_cost_is_reported(tmp_path):
    t = tuner(tmp_path, FakeTimer({"a": 1.0, "b": 2.0}))
    t.choose(KEY, candidates("a", "b"))
    report = t.report()
    assert report["tuned_ops"] == 1 and report["tuning_seconds"] >= 0
    assert report["choices"][KEY.text()]["choice"] == "a"
    with pytest.raises(TypeError, match="timer must be callable"):
        Autotuner("dev", VERSIONS, timer=None)


def test_default_cache_path_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTSR_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_path() == tmp_path / "c" / "autotune.json"
    monkeypatch.delenv("FASTSR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_path() == tmp_path / "x" / "fastsr" / "autotune.json"


# ------------------------------------------------- the auto backend's runner, under the Triton interpreter

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@pytest.mark.skipif(not INTERPRET, reason="needs TRITON_INTERPRET=1 (CPU machines)")
@pytest.mark.parametrize("prefer", ["cudnn", "triton", "mixed", "fused"])
def test_auto_runner_runs_each_choice_correctly(prefer, make_image):
    """The runner the auto backend builds on CUDA, on the CPU under the interpreter: whichever candidate the
    timer favours per op (cuDNN = torch's conv there), the output is the reference's; the choices are
    cached per op shape, so the second image times nothing."""
    import torch

    from fastsr.engine.plan import lower
    from fastsr.engine.triton_backend import CUDNN, FUSED, UNFUSED, TritonRunner
    from fastsr.models import EDSRConfig, build

    torch.manual_seed(0)
    model = build(EDSRConfig(n_resblocks=2, n_feats=16, scale=2)).eval()

    def seconds(key, name):  # "mixed": cuDNN for the ReLU convs, the kernel for the residual ones
        if key.epilogue == "block":  # a whole residual block: the fused kernel or its two convs
            fast = FUSED if prefer == "fused" else UNFUSED
        else:
            fast = {"cudnn": CUDNN}.get(prefer) or ("triton" if prefer != "mixed" or key.epilogue != "relu" else CUDNN)
        return 1.0 if name == fast else 2.0

    timed = []

    class Scripted(Autotuner):
        """The real choice and cache logic; each candidate really runs and reports the scripted time."""

        def choose(self, key, candidates):
            def run_and_time(name, run):
                run()  # on the runner's scratch buffers
                timed.append(name)
                return seconds(key, name)

            named = {name: (lambda name=name, run=run: run_and_time(name, run)) for name, run in candidates.items()}
            return super().choose(key, named)

    tuner = Scripted("interpreter", VERSIONS, timer=lambda fn: fn(), persist=False)
    runner = TritonRunner(lower(model, 2), torch.device("cpu"), torch.float32, tuner=tuner)
    x = make_image(1, 7, 9)
    with torch.no_grad():
        ref = model(x)
        out = runner(x).float()
        n_timed = len(timed)
        again = runner(x).float()
    torch.testing.assert_close(out, ref, atol=1e-3, rtol=0)  # fp32: summation order only
    # 3 keys (conv+ReLU, conv+residual, the whole block) x 2 candidates each, timed on the first image only.
    assert torch.equal(again, out) and len(timed) == n_timed == 3 * 2
    # The body: 2 blocks x (conv+ReLU, conv+residual) + the body's last conv (+ the global skip).
    assert len(runner.choices) == 5 and len(tuner.report()["choices"]) == 3 and sorted(runner.blocks) == [1, 3]
    expected = {"cudnn": [CUDNN] * 5, "triton": ["triton"] * 5, "mixed": [CUDNN, "triton"] * 2 + ["triton"],
                "fused": [FUSED] * 4 + ["triton"]}[prefer]
    assert [runner.choices[i] for i in range(1, 6)] == expected
    assert runner.configs and all("triton" in c for c in runner.configs.values())
