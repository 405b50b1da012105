"""The export cache under concurrent processes (anyseg_core.deploy.cached_export).

Processes that start together on a cold cache (two nodes launched at once, a node and its
benchmark) must all get the one export: one process exports while the others wait for its
lock, and a process killed in the middle of an export leaves nothing that blocks the next
run. Every process here is a real one (subprocess), sharing only the cache directory.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnx", reason="the deploy extra is not installed (pip install .[deploy])")
pytest.importorskip("onnxruntime", reason="the deploy extra is not installed")
pytest.importorskip("openvino", reason="the deploy extra is not installed")

from anyseg_core import deploy  # noqa: E402
from anyseg_core.checkpoint import read_metadata  # noqa: E402
from anyseg_core.modalities import all_subsets  # noqa: E402
from anyseg_core.runtime import Runtime  # noqa: E402

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 4
LIVENESS_S = 240  # a bound on a hung child, not a speed requirement

# A child: imports, says READY, waits for "go" on stdin (so that every child starts the
# export at the same moment), then asks the cache for the export as Runtime does, logging
# what cached_export does, and runs the model from it with OpenVINO.
CHILD = r"""
import sys
import torch
from anyseg_core import deploy
from anyseg_core.checkpoint import read_metadata
from anyseg_core.runtime import Runtime

checkpoint = sys.argv[1]
size = read_metadata(checkpoint)["input_size"]
print("READY", flush=True)
assert sys.stdin.readline().strip() == "go"
path = deploy.cached_export(checkpoint, size, "fp32", log=lambda m: print("LOG", m, flush=True))
print("PATH", path, flush=True)
if "--run" in sys.argv:
    runtime = Runtime(checkpoint, device="cpu", backend="openvino", warmup=False)
    assert runtime.export_path == path, (runtime.export_path, path)
    x = {m: torch.zeros(1, 3, *size) for m in runtime.modalities}
    print("LABELS", tuple(runtime.predict(x).labels.shape), flush=True)
"""


def _env(cache: Path) -> dict:
    env = dict(os.environ, ANYSEG_CACHE=str(cache), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH"))
                                        if p)
    return env


def _start(checkpoint: Path, cache: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(checkpoint), *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(cache), cwd=REPO_ROOT)


def _wait_for(proc: subprocess.Popen, prefix: str) -> list[str]:
    """stdout lines up to and including the first one starting with ``prefix``."""
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith(prefix):
            return lines
    raise AssertionError(f"the child exited (code {proc.wait()}) before printing {prefix!r}: "
                         f"{lines}\n{proc.stderr.read()[-3000:]}")


def _entries(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "exports").iterdir())


def _key(checkpoint: Path) -> str:
    size = read_metadata(checkpoint)["input_size"]
    return (f"{deploy.file_sha256(checkpoint)[:16]}-{size[0]}x{size[1]}-fp32"
            f"-v{deploy.FORMAT_VERSION}")


def test_processes_starting_together_on_a_cold_cache_share_one_export(tiny_teacher, tmp_path):
    cache = tmp_path / "cache"
    children = [_start(tiny_teacher, cache, "--run") for _ in range(PROCESSES)]
    try:
        for child in children:
            _wait_for(child, "READY")
        for child in children:  # all at once
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=LIVENESS_S) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    for child, (out, err) in zip(children, outputs):
        assert child.returncode == 0, f"{out}\n{err[-3000:]}"
    key = _key(tiny_teacher)
    paths = {line.split(" ", 1)[1] for out, _ in outputs for line in out.splitlines()
             if line.startswith("PATH ")}
    assert paths == {str(cache / "exports" / key)}
    # one of them exported (a log line per subset graph), the others waited and took it
    exporters = [out for out, _ in outputs if "LOG exporting" in out]
    assert len(exporters) == 1, [out for out, _ in outputs]
    subsets = all_subsets(read_metadata(tiny_teacher)["modalities"])
    assert exporters[0].count("LOG exporting") == len(subsets)
    h, w = read_metadata(tiny_teacher)["input_size"]
    assert all(f"LABELS ({h}, {w})" in out for out, _ in outputs)  # each ran the model
    # one export in the cache, and nothing half-made beside it
    assert _entries(cache) == [key, key + deploy.LOCK_SUFFIX]
    assert deploy.read_export(cache / "exports" / key)["checkpoint_sha256"] == \
        deploy.file_sha256(tiny_teacher)


def test_an_exporter_killed_mid_export_never_blocks_the_next_run(tiny_teacher, tmp_path,
                                                                  monkeypatch):
    cache = tmp_path / "cache"
    key = _key(tiny_teacher)
    child = _start(tiny_teacher, cache)
    try:
        _wait_for(child, "READY")
        child.stdin.write("go\n")
        child.stdin.flush()
        # It announces the first subset graph after it took the lock and made its partial
        # directory: killed now, it leaves both behind, as a crash or a power cut would.
        _wait_for(child, "LOG exporting")
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=LIVENESS_S) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    left = _entries(cache)
    assert key not in left  # nothing that looks finished
    assert [n for n in left if n.startswith(f".{key}.") and n.endswith(deploy.PARTIAL_SUFFIX)]
    # The next run (here this process, as Runtime is used) exports and cleans up.
    monkeypatch.setenv("ANYSEG_CACHE", str(cache))
    runtime = Runtime(tiny_teacher, device="cpu", backend="openvino", warmup=False)
    assert runtime.export_path == cache / "exports" / key
    assert _entries(cache) == [key, key + deploy.LOCK_SUFFIX]
    size = read_metadata(tiny_teacher)["input_size"]
    x = {m: torch.zeros(1, 3, *size) for m in runtime.modalities}
    assert tuple(runtime.predict(x).labels.shape) == tuple(size)


HOLDER = r"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"{os.getpid()}\n".encode())
print("HELD", flush=True)
sys.stdin.read()  # until the test closes stdin
"""


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_lock_held_too_long_is_a_clear_error_and_its_release_lets_the_export_go_on(
        tiny_teacher, tmp_path, monkeypatch):
    monkeypatch.setenv("ANYSEG_CACHE", str(tmp_path / "cache"))
    key = _key(tiny_teacher)
    lock = tmp_path / "cache" / "exports" / (key + deploy.LOCK_SUFFIX)
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "HELD"
        size = read_metadata(tiny_teacher)["input_size"]
        logged = []
        with pytest.raises(deploy.ExportBusy) as busy:
            deploy.cached_export(tiny_teacher, size, log=logged.append, wait_s=0.5)
        message = str(busy.value)
        assert str(lock) in message and f"process {holder.pid}" in message, message
        assert str(tiny_teacher) in message
        assert any(f"waiting for process {holder.pid}" in line for line in logged), logged
        assert _entries(tmp_path / "cache") == [key + deploy.LOCK_SUFFIX]  # nothing made
    finally:
        holder.stdin.close()
        holder.wait(timeout=LIVENESS_S)
    # the holder is gone: the lock is free and the export is made
    path = deploy.cached_export(tiny_teacher, size, wait_s=0.5)
    assert deploy.read_export(path)["checkpoint_sha256"] == deploy.file_sha256(tiny_teacher)
