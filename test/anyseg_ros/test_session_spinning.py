"""The node's ``onnxruntime.spinning`` parameter reaches every ONNX Runtime session it opens:
false (the default) leaves the CPU threads sleeping between runs, true lets them busy-wait."""
from __future__ import annotations

import pytest

from helpers import ListLogger

pytest.importorskip("onnx", reason="the deploy extra is not installed")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the deploy extra)")

from anyseg_core import deploy  # noqa: E402
from anyseg_ros import session as S  # noqa: E402
from anyseg_ros.params import defaults  # noqa: E402


@pytest.mark.parametrize("spinning, entry", [(None, "0"), (False, "0"), (True, "1")])
def test_the_spinning_parameter_reaches_every_onnxruntime_session(checkpoint, tmp_path,
                                                                   monkeypatch, spinning,
                                                                   entry):
    monkeypatch.setenv("ANYSEG_CACHE", str(tmp_path))
    values = {"checkpoint": str(checkpoint), "device": "cpu", "backend": "onnxruntime"}
    if spinning is not None:
        values["onnxruntime.spinning"] = spinning
    else:
        assert defaults()["onnxruntime.spinning"] is False
    session = S.Session(values, logger=ListLogger(), warmup=False)
    sessions = session.runtime.engine.sessions.values()
    assert sessions and {s.get_session_options().get_session_config_entry(deploy.ORT_SPINNING)
                         for s in sessions} == {entry}
