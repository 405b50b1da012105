"""The node's diagnostic levels, as pure functions of what one report period saw (computed by
the ROS-free session, published by the node as diagnostic_msgs levels)."""
from __future__ import annotations

import pytest

pytest.importorskip('rclpy', reason='rclpy is not installed (no ROS 2 here)')

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402

from anyseg_ros import session  # noqa: E402
from anyseg_ros.session import inference_status, sensor_status  # noqa: E402

OK, WARN, ERROR, STALE = session.OK, session.WARN, session.ERROR, session.STALE


def test_session_levels_are_diagnostic_msgs_levels():
    """The node publishes bytes([level]): the session's numbers must be the message's."""
    for mine, theirs in ((OK, DiagnosticStatus.OK), (WARN, DiagnosticStatus.WARN),
                         (ERROR, DiagnosticStatus.ERROR), (STALE, DiagnosticStatus.STALE)):
        assert bytes([mine]) == theirs


def test_sensor_levels():
    assert sensor_status(None, 0.5, 0, 0, 0) == (STALE, 'no message yet')
    assert sensor_status(0.1, 0.5, 0, 10, 0) == (OK, 'OK')
    assert sensor_status(0.1, 0.5, 0, 10, 2)[0] == OK  # a few late messages are normal
    assert sensor_status(2.0, 0.5, 0, 0, 0) == (STALE, 'stale (2.0 s)')
    level, text = sensor_status(2.0, 0.5, 3, 0, 0)
    assert level == ERROR and 'only malformed messages (3)' in text
    level, text = sensor_status(0.1, 0.5, 3, 10, 0)
    assert level == WARN and '3 malformed' in text
    # Alive at its full rate, yet none of its messages makes it into a frame (a LiDAR
    # stamping from its boot clock, say): a WARN saying so, not OK.
    level, text = sensor_status(0.05, 0.5, 0, 10, 10)
    assert level == WARN and '10 of 10 message(s) not used' in text


def test_inference_levels():
    assert inference_status(0, 0, 0, None, False, 2.0) == (WARN, 'no frame yet')
    assert inference_status(50, 10, 0, 0.1, True, 2.0) == (OK, 'running')
    level, text = inference_status(50, 0, 10, 1.0, True, 2.0)
    assert level == ERROR and 'every frame failed (10)' in text
    level, text = inference_status(50, 8, 2, 0.1, True, 2.0)
    assert level == WARN and '2 frame(s) failed' in text
    level, text = inference_status(50, 0, 0, 5.0, True, 2.0)
    assert level == WARN and 'no output for 5.0 s' in text
    # Nothing live, nothing out: the sensors' own STALE entries say why; inference is fine.
    assert inference_status(50, 0, 0, 5.0, False, 2.0) == (OK, 'running')
