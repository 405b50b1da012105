"""benchmarks/bench_backends.py measures each runner in a process of its own, and the
ONNX Runtime sessions take the spinning option they are given.

The benchmark runs in its quick form on a small random-weight checkpoint; what is checked is
the structure of what it hands back (JSON and markdown), never a time.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import export_cache, random_checkpoint

pytest.importorskip("onnx", reason="the deploy extra is not installed (pip install .[deploy])")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the deploy extra)")

from anyseg_core import deploy  # noqa: E402
from anyseg_core.runtime import Runtime  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
NET_HW = (64, 96)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("bench_ckpt") / "random.safetensors",
                             NET_HW)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    yield from export_cache(tmp_path_factory.mktemp("bench_cache"))


def _spinning_of(runtime) -> set[str]:
    return {s.get_session_options().get_session_config_entry(deploy.ORT_SPINNING)
            for s in runtime.engine.sessions.values()}


def test_the_spinning_option_reaches_every_onnxruntime_session(checkpoint, cache):
    for spinning, entry in ((False, "0"), (True, "1"), (None, "0")):  # None: off on a CPU
        runtime = Runtime(checkpoint, device="cpu", backend="onnxruntime", warmup=False,
                          spinning=spinning)
        assert _spinning_of(runtime) == {entry}, spinning
        assert runtime.engine.spinning is (entry == "1")
        assert len(runtime.engine.sessions) == 7


def test_the_benchmark_measures_each_runner_in_its_own_process(checkpoint, cache, tmp_path):
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_backends.py"), "--quick",
           "--checkpoint", str(checkpoint), "--cache", str(cache), "--calls", "2",
           "--frames", "2", "--runners", "torch", "onnxruntime-nospin",
           "--out", str(out), "--markdown", str(md)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "load average before:" in proc.stdout and "load average after:" in proc.stdout

    report = json.loads(out.read_text())
    assert report["method"] == "each runner in a process of its own"
    assert len(report["load_before"]) == 3 and len(report["load_after"]) == 3
    results = report["results"]
    # torch first and last (the drift), the other runner between them, each its own process
    assert [r["runner"] for r in results] == ["torch", "onnxruntime-nospin", "torch"]
    assert len({r["pid"] for r in results}) == 3
    for r in results:
        assert r["size"] == "64x96" and len(r["load_start"]) == 3
        assert set(r["predict"]) == {"camera+events+lidar", "camera"}
        for v in r["predict"].values():
            assert v["median_ms"] > 0 and v["ratio"] > 0 and v["agreement"] >= 0.999
        for loop in (r["frames"], r["frames_with_competitor"]):
            assert {"prepare_ms", "predict_ms", "frame_ms", "cpu_ms_per_frame"} <= set(loop)
        assert r["competitor_alone_per_s"] > 0 and r["competitor_ratio"] > 0
    assert [r["predict"]["camera"]["agreement"] for r in results][::2] == [1.0, 1.0]

    table = md.read_text()
    assert "load average before" in table
    rows = [line for line in table.splitlines() if line.startswith("| 64x96 |")]
    assert len(rows) == 6  # 3 runners in each of the two tables
    assert sum("onnxruntime-nospin" in line for line in rows) == 2
