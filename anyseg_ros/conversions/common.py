"""What every message conversion shares: the rejection type and its reasons, size limits,
stamps, and a byte view of a message's data field."""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np


#: Largest accepted image (pixels) and point cloud (points); anything larger is taken for
#: a corrupt header rather than read.
MAX_PIXELS = 8192 * 8192
MAX_POINTS = 16_000_000

#: Every ``InvalidMessage.reason``, e.g. to create the node's rejection counters up front.
#: There is no "empty": an empty point cloud or event packet is valid (an empty sweep).
REASONS = ("unknown_encoding", "bad_size", "step_too_small", "data_length", "missing_field",
           "bad_point_step", "non_finite", "out_of_image", "bad_event_time", "bad_stamp",
           "singular_K", "bad_distortion", "bad_roi", "bad_compressed", "bad_event_data")


class InvalidMessage(ValueError):
    """A message that cannot be converted.

    ``reason``: a short stable key from :data:`REASONS` (a counter label);
    ``detail``: human-readable text naming the offending numbers."""

    def __init__(self, reason: str, detail: str):
        super().__init__(reason, detail)  # both in args, so the exception pickles
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


def stamp_to_sec(stamp: Any) -> float:
    """A ``builtin_interfaces/Time`` (attributes ``sec``, ``nanosec``) in float seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(t: float) -> tuple[int, int]:
    """Float seconds -> ``(sec, nanosec)`` with ``nanosec`` in [0, 1e9): the nanosecond
    nearest to the exact value of ``t`` (ties to even), so e.g. -0.25 gives (-1, 750000000)."""
    if not math.isfinite(t):
        raise ValueError(f"cannot make a stamp of {t}")
    # Fraction is exact: t * 1e9 in float would be off by up to 128 ns at UNIX times.
    sec, nanosec = divmod(round(Fraction(float(t)) * 1_000_000_000), 1_000_000_000)
    return int(sec), int(nanosec)


def check_stamp(stamp_sec: float, now: float | None = None, max_future: float = 1.0) -> None:
    """Raise ``InvalidMessage("bad_stamp")`` for an unset (0), negative or non-finite stamp,
    and, when ``now`` is given, for one more than ``max_future`` seconds ahead of it."""
    if not math.isfinite(stamp_sec) or stamp_sec <= 0.0:
        raise InvalidMessage("bad_stamp", f"stamp {stamp_sec} s is unset or not a time")
    if now is not None and stamp_sec > now + max_future:
        raise InvalidMessage("bad_stamp", f"stamp {stamp_sec:.6f} s is {stamp_sec - now:.3f} s "
                                          f"in the future (more than {max_future} s)")


def byte_view(data: Any) -> np.ndarray:
    """``msg.data`` as a flat uint8 array, without a copy where it has the buffer protocol."""
    if isinstance(data, np.ndarray):  # rosbags: uint8 already; a non-contiguous one is copied
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(data, np.uint8)  # array.array('B') (rclpy), bytes, memoryview
    except TypeError:  # a list of ints, as a hand-written message might hold
        return np.asarray(data, np.uint8)


