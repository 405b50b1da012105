"""Event cameras as their ROS 2 drivers publish them (``event_camera_msgs/EventPacket``).

The public entry points:

- :class:`EventDecoder` (one per topic, stateful): ``decode(packet)`` -> :class:`CdEvents`
  (``t`` int64 ns = ``time_base`` + decoded time, ``x``/``y`` uint16, ``p`` uint8, 1 = ON), for
  the encodings ``evt3``, ``libcaer_cmp``, ``libcaer`` and ``mono``
  (:mod:`anyseg_ros.conversions.event_packets` has the formats and the time rules);
- :class:`SensorClock`: maps a camera's own clock (evt3: microseconds since the camera
  started, ``time_base`` 0) to ROS time from the packets' header stamps;
- :class:`EventPacketStream`: both, and the packet counter, for one topic: what the node
  and ``process_bag`` turn each packet into events on ROS time with.
"""
from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any, Optional

import numpy as np

from anyseg_core.sensors.frame import Events

from .conversions.common import InvalidMessage
from .conversions.event_packets import (BACKENDS, ENCODINGS, CdEvents, EventDecoder,
                                        encode_evt3)
from .conversions.events import check_event_times

__all__ = ["BACKENDS", "ENCODINGS", "CdEvents", "EventDecoder", "EventPacketStream",
           "SensorClock", "encode_evt3"]


class SensorClock:
    """The offset from a camera's own clock to ROS time, estimated from packet stamps.

    Each packet gives one sample, ``stamp - t_first``: its header stamp (the host time when
    its first buffer arrived) minus the camera time of its first event. Delivery delay and
    host jitter only ever make a sample larger than the true offset, so the estimate is the
    smallest sample of the last ``window`` seconds (of stamps): it follows slow drift between
    the two clocks and ignores late packets. A sample more than ``jump`` seconds from the
    estimate is not used; ``confirm`` such samples in a row that agree with each other (a
    camera restart, or a clock that was set) restart the estimator from them. Until then
    those packets raise ``InvalidMessage("bad_event_time")`` (one late packet is not a
    jump). ``resets`` counts the restarts."""

    def __init__(self, window: float = 5.0, jump: float = 0.5, confirm: int = 3) -> None:
        self.window_ns = int(window * 1e9)
        self.jump_ns = int(jump * 1e9)
        self.confirm = int(confirm)
        self.resets = 0
        # (stamp_ns, sample_ns) of the window that can still be its minimum: stamps and
        # samples both increasing, so the minimum is the first (no scan per packet)
        self._samples: deque = deque()
        self._suspects: list = []
        self.offset_ns: Optional[int] = None

    def offset(self, stamp_ns: int, first_ns: int) -> int:
        """The offset (ns) to add to this packet's camera times; raises bad_event_time for
        a packet whose clock jumped (until the jump is confirmed)."""
        sample = int(stamp_ns) - int(first_ns)
        if self.offset_ns is not None and abs(sample - self.offset_ns) > self.jump_ns:
            self._suspects.append((int(stamp_ns), sample))
            values = [s for _, s in self._suspects]
            if len(values) < self.confirm or max(values) - min(values) > self.jump_ns:
                if max(values) - min(values) > self.jump_ns:
                    self._suspects = self._suspects[-1:]
                raise InvalidMessage("bad_event_time", (
                    f"the event camera's clock moved {(sample - self.offset_ns) * 1e-9:+.3f} s "
                    f"against the packet stamps (more than {self.jump_ns * 1e-9} s); "
                    f"{self.confirm} packets in a row like this restart the clock mapping"))
            suspects, self._samples, self._suspects = self._suspects, deque(), []
            for entry in suspects:
                self._push(*entry)
            self.resets += 1
        else:
            self._suspects = []
            self._push(int(stamp_ns), sample)
        while self._samples[0][0] < stamp_ns - self.window_ns:  # the newest always stays
            self._samples.popleft()
        self.offset_ns = self._samples[0][1]
        return self.offset_ns

    def _push(self, stamp_ns: int, sample: int) -> None:
        """Add a sample; those before it that are no smaller can never be the minimum."""
        while self._samples and self._samples[-1][1] >= sample:
            self._samples.pop()
        self._samples.append((stamp_ns, sample))


class EventPacketStream:
    """One event-camera topic: packets in, :class:`~anyseg_core.sensors.frame.Events` on ROS
    time out (``t`` float64 seconds on the clock of the header stamps).

    - ``time_base`` 0 (evt3): the camera's clock, mapped with a :class:`SensorClock`;
    - ``time_base`` set (libcaer, libcaer_cmp: host epoch ns): already ROS time; events more
      than EVENT_TIME_TOLERANCE_S (2 s) from the header stamp are rejected (bad_event_time: a
      restamped bag, or a driver on another clock);
    - ``seq``: a gap counts the packets lost in ``notes["lost_packets"]``; a ``seq`` that goes
      back is a restarted driver: the decoder and the clock start afresh
      (``notes["stream_restarts"]``);
    - trigger words skipped: ``notes["trigger_words"]``.
    ``size_hw``: the event camera's size when known (a packet of another size is rejected as
    bad_size). Thread-safe."""

    def __init__(self, backend: str = "auto") -> None:
        self.decoder = EventDecoder(backend=backend)
        self.clock = SensorClock()
        self._last_seq: Optional[int] = None
        self._lock = threading.Lock()

    def __call__(self, msg: Any, size_hw: Optional[tuple[int, int]] = None,
                 notes: Optional[Counter] = None) -> Events:
        notes = Counter() if notes is None else notes
        with self._lock:
            seq = int(msg.seq)
            if self._last_seq is not None:
                if seq > self._last_seq + 1:
                    notes["lost_packets"] += seq - self._last_seq - 1
                elif seq <= self._last_seq:
                    self.decoder.reset()
                    self.clock = SensorClock()
                    notes["stream_restarts"] += 1
            self._last_seq = seq
            if size_hw is not None and tuple(size_hw) != (int(msg.height), int(msg.width)):
                raise InvalidMessage("bad_size", (
                    f"an event packet of a {msg.width} x {msg.height} sensor, but the event "
                    f"camera is {size_hw[1]} x {size_hw[0]} (events.width / events.height, or "
                    "the camera's size when events.K is unset)"))
            triggers = self.decoder.triggers
            cd = self.decoder.decode(msg)
            if self.decoder.triggers > triggers:
                notes["trigger_words"] += self.decoder.triggers - triggers
            stamp_ns = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
            if not cd.count:
                return _events(cd, 0)
            if int(msg.time_base) == 0:
                return _events(cd, self.clock.offset(stamp_ns, int(cd.t[0])))
        check_event_times(int(cd.t.min()) * 1e-9, int(cd.t.max()) * 1e-9, stamp_ns * 1e-9,
                          f"{msg.encoding} times are time_base (the driver's host time) plus "
                          "the camera's: a bag restamped on replay cannot move them")
        return _events(cd, 0)


def _events(cd: CdEvents, offset_ns: int) -> Events:
    t = (cd.t + np.int64(offset_ns)) if offset_ns else cd.t
    return Events(x=cd.x, y=cd.y, t=t * 1e-9, p=cd.p)
