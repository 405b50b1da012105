"""Without the deploy extra: backend auto falls back to PyTorch and a named exported backend
stops with a message saying what to install. A subprocess sees onnx, onnxscript,
onnxruntime and openvino as absent (a sitecustomize blocks them), whatever this venv has."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BLOCK = """
import sys
for name in ("onnx", "onnxscript", "onnxruntime", "openvino"):
    sys.modules[name] = None  # import fails, importlib.util.find_spec gives None
"""


def test_without_the_deploy_extra_auto_is_torch_and_named_backends_say_what_to_install(
        tiny_teacher, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCK)
    script = textwrap.dedent(f"""
        from anyseg_core.runtime import Runtime
        r = Runtime({str(tiny_teacher)!r}, device="cpu", backend="auto", warmup=False)
        print("auto:", r.backend)
        for backend in ("onnxruntime", "openvino"):
            try:
                Runtime({str(tiny_teacher)!r}, device="cpu", backend=backend, warmup=False)
            except ValueError as e:
                print(backend + ":", e)
    """)
    env = {"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert "auto: torch" in lines, done.stdout
    for backend in ("onnxruntime", "openvino"):
        line = next(x for x in lines if x.startswith(backend + ":"))
        assert "not installed" in line and "anyseg_ros[deploy]" in line, line
