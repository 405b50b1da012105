"""anyseg_ros.tools.processes.interrupt on real child processes."""
from __future__ import annotations

import signal
import subprocess
import sys

from anyseg_ros.tools.processes import interrupt


def _start(on_sigint: str) -> subprocess.Popen:
    """A Python child that handles SIGINT with ``on_sigint`` and then sleeps."""
    code = ("import signal, sys, time\n"
            f"signal.signal(signal.SIGINT, {on_sigint})\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"  # its handler is in place
    return proc


def test_a_process_that_handles_sigint_exits_with_its_own_code():
    proc = _start("lambda *a: sys.exit(0)")
    assert interrupt(proc, timeout=30) == 0


def test_a_process_that_ignores_sigint_is_killed_after_the_timeout():
    proc = _start("signal.SIG_IGN")
    assert interrupt(proc, timeout=0.5) == -signal.SIGKILL


def test_a_finished_process_or_none_is_left_as_it_is():
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    assert interrupt(proc) == 3
    assert interrupt(None) is None
