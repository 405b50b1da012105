"""Lost frames are never silent: a frame sensor's stamp gaps (FrameGaps) and an event camera's
packet counter show in the session's diagnostics, WARN above LOSS_WARN_RATE of a period."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from anyseg_ros import conversions as conv
from anyseg_ros.session import LOSS_WARN_RATE, OK, WARN, FrameGaps, Session

T0 = 1_700_000_000.0


def test_frame_gaps_count_the_frames_missing_between_stamps():
    gaps, rng = FrameGaps(), np.random.default_rng(0)
    stamps = T0 + 0.1 * np.arange(100) + rng.uniform(-0.01, 0.01, 100)  # 10 Hz, 10 % jitter
    missing = {20, 21, 22, 50, 77}
    lost = [gaps.add(s, max_gap=0.5) for k, s in enumerate(stamps) if k not in missing]
    assert sum(lost) == len(missing)  # 3 in a row count 3, jitter counts nothing
    assert gaps.add(stamps[-1] - 1.0, 0.5) == 0  # a stamp from the past: ignored


def test_an_outage_is_not_loss_and_a_new_rate_is_learnt():
    gaps = FrameGaps()
    t = [T0 + 0.1 * k for k in range(20)] + [T0 + 5.0 + 0.1 * k for k in range(20)]
    assert sum(gaps.add(s, max_gap=0.5) for s in t) == 0  # 3 s silent: stale, not lost
    # the sensor goes from 10 to 5 Hz: counted while the old period rules, then not
    slow = [T0 + 7.0 + 0.2 * k for k in range(40)]
    lost = [gaps.add(s, max_gap=0.5) for s in slow]
    assert sum(lost[20:]) == 0


def _image(stamp: float):
    return conv.array_to_image(np.zeros((48, 64, 3), np.uint8), "rgb8", stamp, "camera",
                               cls=SimpleNamespace)


def _camera_diagnostic(session, now):
    (d,) = [d for d in session.diagnostics(now) if d.name == "camera"]
    return d


def test_the_session_reports_lost_camera_frames_and_warns_above_the_rate(checkpoint):
    session = Session({"checkpoint": str(checkpoint), "device": "cpu", "network.height": 64,
                       "network.width": 96, "modalities": ["camera"],
                       "camera.K": [60.0, 0, 31.5, 0, 60.0, 23.5, 0, 0, 1]}, warmup=False)
    stamps = [T0 + 0.1 * k for k in range(60)]
    for s in stamps[:30]:  # a clean period
        assert session.receive("camera", _image(s), now=s)
    d = _camera_diagnostic(session, stamps[29])
    assert d.level == OK and "lost_frames" not in d.values, (d.message, d.values)
    for k, s in enumerate(stamps[30:], start=30):  # 3 of the next 30 lost: 10 %
        if k not in (35, 44, 52):
            assert session.receive("camera", _image(s), now=s)
    d = _camera_diagnostic(session, stamps[-1])
    assert 3 / 30 > LOSS_WARN_RATE
    assert d.level == WARN and "3 message(s) lost" in d.message, d.message
    assert d.values["lost_frames"] == "3"
    assert session.counts()["inputs"]["camera"]["notes"] == {"lost_frames": 3}
    # a malformed image arrived: not lost (it is a rejection)
    bad = _image(stamps[-1] + 0.1)
    bad.encoding = "yuv422"
    assert not session.receive("camera", bad, now=stamps[-1] + 0.1)
    assert session.receive("camera", _image(stamps[-1] + 0.2), now=stamps[-1] + 0.2)
    d = _camera_diagnostic(session, stamps[-1] + 0.2)
    assert d.values["lost_frames"] == "3" and d.values["rejected.unknown_encoding"] == "1"


@pytest.mark.parametrize("lost, level", [(0, OK), (1, WARN)])
def test_event_packet_gaps_are_lost_packets(checkpoint, lost, level):
    from anyseg_ros.events import encode_evt3

    session = Session({"checkpoint": str(checkpoint), "device": "cpu", "network.height": 64,
                       "network.width": 96, "modalities": ["events"], "events.type": "packet",
                       "camera.K": [60.0, 0, 31.5, 0, 60.0, 23.5, 0, 0, 1],
                       "camera.height": 48, "camera.width": 64}, warmup=False)
    seqs = [s for s in range(20) if not (lost and s == 7)]
    for seq in seqs:
        t_us = 1_000_000 + seq * 10_000
        data = encode_evt3(np.array([t_us]), np.array([3]), np.array([4]), np.array([1]))
        stamp_ns = int(T0 * 1e9) + seq * 10_000_000
        packet = SimpleNamespace(
            header=SimpleNamespace(stamp=SimpleNamespace(sec=stamp_ns // 10**9,
                                                         nanosec=stamp_ns % 10**9),
                                   frame_id="camera"),
            height=48, width=64, seq=seq, time_base=0, encoding="evt3", is_bigendian=False,
            events=np.frombuffer(data, np.uint8))
        assert session.receive("events", packet, now=stamp_ns * 1e-9), session.counts()
    (d,) = [d for d in session.diagnostics(T0 + 0.2) if d.name == "events"]
    assert d.level == level, (d.message, d.values)
    assert int(d.values.get("lost_packets", 0)) == lost
