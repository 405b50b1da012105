"""The session says at start how far OpenVINO's bf16 labels are from fp32's, in one line.

With ``backend: openvino`` and ``precision: bf16`` on a CPU with native bf16, the start-up
log holds one line with the agreement of every modality subset (``Runtime.bf16_agreement``):
a warning when a subset is below 99.9 %, else info. The model is the small random-weight
checkpoint of conftest.py.
"""
from __future__ import annotations

import warnings

import pytest

from helpers import ListLogger

pytest.importorskip("onnx", reason="the deploy extra is not installed")
pytest.importorskip("openvino", reason="openvino is not installed (the deploy extra)")

from anyseg_core import deploy  # noqa: E402
from anyseg_ros import session as S  # noqa: E402

NET_HW = (64, 96)  # the random checkpoint's size (conftest.py)


def _session(checkpoint, precision):
    log = ListLogger()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a CPU without bf16 runs fp32
        session = S.Session({"checkpoint": str(checkpoint), "device": "cpu",
                             "backend": "openvino", "precision": precision,
                             "network.height": NET_HW[0], "network.width": NET_HW[1]},
                            logger=log, warmup=False)
    return session, [line for line in log.lines if "bf16 labels equal fp32's" in line[1]]


@pytest.mark.slow
def test_the_bf16_agreement_is_one_start_up_line(checkpoint):
    session, lines = _session(checkpoint, "bf16")
    agreement = session.runtime.bf16_agreement
    if session.runtime.precision != "bf16":
        assert agreement is None and lines == []
        pytest.skip("this CPU has no native bf16: OpenVINO runs fp32, nothing to report")
    assert len(lines) == 1
    level, text = lines[0]
    assert level == ("info" if agreement.meets_minimum else "warning")
    assert all(f"{key} {100 * v:.2f} %" in text for key, v in agreement.subsets.items())
    assert str(agreement.path) in text and agreement.path.name == deploy.BF16_AGREEMENT_FILE


@pytest.mark.slow
def test_no_bf16_line_in_fp32(checkpoint):
    session, lines = _session(checkpoint, "fp32")
    assert session.runtime.bf16_agreement is None and lines == []
