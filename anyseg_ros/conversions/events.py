"""Events carried as a ``sensor_msgs/PointCloud2`` of this project's layout (x, y, t, p)."""
from __future__ import annotations

from typing import Any

import numpy as np

from anyseg_core.sensors.frame import Events

from .clouds import FLOAT_TYPES, INTEGER_TYPES, cloud_records
from .common import InvalidMessage, stamp_to_sec


#: How far an event's time may be from its packet's header stamp, seconds. Packets hold
#: milliseconds of events; this only catches times on another clock or in another unit.
EVENT_TIME_TOLERANCE_S = 2.0


def events_from_cloud(msg: Any, size_hw: tuple[int, int] | None) -> Events:
    """Events carried as a ``PointCloud2`` with fields x, y (integer pixels), t (float
    seconds on the clock of ``header.stamp``), p (integer polarity) -> :class:`Events` with
    x, y uint16, t float64, p uint8 (every p > 0 becomes 1, the rest 0).

    The project's layout is x UINT16, y UINT16, t FLOAT64, p UINT8; any integer type is
    accepted for x, y, p and FLOAT32 for t. Arrays are copies. An empty cloud gives empty
    Events. Reasons: missing_field (absent, or t not float, or x/y/p not integer),
    non_finite (a t is NaN or infinite), out_of_image (an x >= W or y >= H of ``size_hw``,
    or negative, or beyond uint16 when ``size_hw`` is None), bad_event_time (a t more than
    EVENT_TIME_TOLERANCE_S from ``header.stamp``: times relative to the packet, or FLOAT32
    times at UNIX epochs, whose step is 128 s, would leave every event outside the window
    the frame renders); and those of cloud_to_array.
    """
    records = cloud_records(msg, ("x", "y", "t", "p"), allowed={
        "x": INTEGER_TYPES, "y": INTEGER_TYPES, "t": FLOAT_TYPES, "p": INTEGER_TYPES})
    t = records["t"].astype(np.float64)
    if not np.isfinite(t).all():
        bad = int(np.count_nonzero(~np.isfinite(t)))
        raise InvalidMessage("non_finite", f"{bad} of {len(t)} event times are not finite")
    height, width = size_hw if size_hw is not None else (65536, 65536)
    pixels = {}
    for axis, limit in (("x", width), ("y", height)):
        values = records[axis]
        if len(values) and (values.min() < 0 or values.max() >= limit):
            outside = int(np.count_nonzero((values < 0) | (values >= limit)))
            raise InvalidMessage("out_of_image", f"{outside} of {len(values)} events have {axis} "
                                                 f"outside [0, {limit}) (range {values.min()}.."
                                                 f"{values.max()})")
        pixels[axis] = values.astype(np.uint16)
    if len(t):
        check_event_times(float(t.min()), float(t.max()), stamp_to_sec(msg.header.stamp),
                          "t must be absolute seconds on the clock of header.stamp (FLOAT64: "
                          "FLOAT32 cannot hold UNIX times)")
    p = (records["p"] > 0).astype(np.uint8)
    return Events(x=pixels["x"], y=pixels["y"], t=t, p=p)


def check_event_times(lo: float, hi: float, stamp: float, hint: str) -> None:
    """``InvalidMessage("bad_event_time")`` when events from ``lo`` to ``hi`` (seconds) are
    not within EVENT_TIME_TOLERANCE_S of their packet's ``stamp``; ``hint`` says why."""
    if lo < stamp - EVENT_TIME_TOLERANCE_S or hi > stamp + EVENT_TIME_TOLERANCE_S:
        raise InvalidMessage("bad_event_time", (
            f"event times {lo:.6f}..{hi:.6f} s are not near the packet's stamp {stamp:.6f} s "
            f"(within {EVENT_TIME_TOLERANCE_S} s): {hint}"))
