"""Child processes of the tools, benchmarks and tests (the node, a player)."""
from __future__ import annotations

import signal
import subprocess
from typing import Optional


def interrupt(proc: Optional[subprocess.Popen], timeout: float = 10.0) -> Optional[int]:
    """Stop ``proc`` as Ctrl-C would: SIGINT if it is still running, then kill it if it has
    not exited after ``timeout`` seconds. Returns its exit code (None for no process)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
