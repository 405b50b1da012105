"""Anymodal synchroniser: frames from whichever sensors are alive.

message_filters' ApproximateTimeSynchronizer emits nothing once one input stops. This one
keeps producing frames from the sensors that are alive, matches messages by header stamp,
and bounds latency when the consumer is slower than the sensors. Pure Python, no rclpy, no
threads (the caller serialises calls), and no clock of its own: every call that needs the
time takes ``now`` (seconds, on the caller's clock, wall or sim time), so it runs with a
fake clock in tests.

Semantics (s is the stamp of a frame's pivot message; all times in seconds):

* Buffers. Each sensor keeps at most ``buffer_size`` unused messages sorted by stamp
  (messages may arrive out of order); when full the lowest stamp is evicted
  (``stats["overflow"]``).
* Liveness. A sensor is live at ``now`` when its last message, useful or not, arrived at
  ``now - stale_after`` or later. A sensor that sent nothing (since the last reset) is not.
* Pivot. The first live sensor in ``pivot_order`` (default: ``sensors``). Frames are formed
  only around pivot messages, so when the first sensor returns it is the pivot again from
  the next poll on.
* Candidates. The pivot sensor's buffered messages with a stamp above the last emitted
  frame's.
* Matching, single sensors: the buffered message nearest to s with ``|stamp - s| <= slop``
  (a tie goes to the earlier one), or none. Windowed sensors (``windows[name] = w``,
  messages stamped at their end, like event packets): every buffered message with a stamp
  in ``(s - w, s]`` and, when none is stamped exactly s, the first one after s if it is
  within slop: that one holds the last part of the window. Later messages are left for the
  next frame. A windowed pivot also gets its own buffered messages in ``(s - w, s)``; the
  pivot message is always ``items[pivot][-1]``.
* Settled. Another sensor is settled for s when it is not live, or when the newest stamp
  it has sent (since the last reset) is >= s: messages arrive in stamp order per sensor
  (nearly), so no better match can still come.
* Ready. A candidate is ready when every other sensor is settled for it, or when
  ``now >= arrival + max_wait`` (it then goes with whatever matched so far).
* poll(now) emits the NEWEST ready candidate; older candidates not in the frame are dropped
  (``Frame.dropped``, ``stats["dropped_backlog"]``). So a consumer slower than the sensors
  always gets the freshest data. Frame stamps strictly increase between resets.
* Never twice. After a frame, each sensor discards its messages stamped at or below the
  newest one it gave the frame, at or below ``s - slop`` (``s - w`` windowed; those can
  match no later frame), and the pivot sensor everything up to s. A message added later
  with a stamp at or below its sensor's discard line is dropped as ``stats["late"]``; for
  the pivot sensor that is any stamp <= the last emitted frame stamp.
* Time jumps back (a bag restarting or looping, sim time reset): when ``now`` (given to add,
  poll or live) is more than ``backjump`` below the largest ``now`` seen, everything is
  cleared (buffers, last stamp, liveness; ``stats["resets"]``, as for reset()). A message
  stamped more than ``backjump`` below the newest stamp its sensor sent (for a sensor not
  heard since the last reset: below the last emitted frame stamp) is dropped
  (``stats["backjumped"]``) unless it is the ``jump_confirm``-th such message of its sensor
  in a row and none of its messages in step with its newest stamp arrived within
  ``stale_after``: then the sensor's clock did go back (a bag loop replayed on the wall
  clock), so everything is cleared as above and the message is added as usual. One stray
  old message, or a second publisher on the topic whose clock is behind (at any rate, while
  the first one keeps publishing), therefore never clears the other sensors nor makes the
  next frame older than the last. Comparing a sensor with itself means one sensor with a
  constant clock offset is not taken for a jump on every message.
* Per-sensor counts: ``sensor_stats[name]`` counts that sensor's ``late``, ``overflow`` and
  ``backjumped`` messages (``stats`` has the totals).
* New settings: ``new.carry_over(old)`` hands a synchroniser with other settings the old
  one's buffers, liveness, clock, last frame stamp and counts; the new settings apply from
  the next poll (the node's dynamic parameters).
* next_deadline() is the earliest arrival + max_wait among the candidates of the pivot at
  the largest ``now`` seen: the node can sleep until then (or the next message).
  poll(next_deadline()) then emits, unless the pivot changed in between (a sensor going
  stale is not a deadline; the next message or deadline picks it up).

poll, add and next_deadline cost O(buffer_size) per sensor.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

STAT_KEYS = ("frames", "dropped_backlog", "late", "resets", "overflow", "backjumped")
SENSOR_STAT_KEYS = ("late", "overflow", "backjumped")


@dataclass(frozen=True)
class Stamped:
    """One buffered sensor message."""

    stamp: float    # header stamp, seconds
    arrival: float  # `now` when it was added
    payload: Any    # opaque (already converted sensor data)
    exact: Any = None  # the stamp as received, e.g. (sec, nanosec), handed back untouched:
    #                    float seconds cannot hold nanoseconds at UNIX times


@dataclass
class Frame:
    """Messages matched around one pivot message, as returned by ``poll``."""

    stamp: float                     # the pivot message's stamp
    pivot: str                       # sensor name of the pivot
    items: dict[str, list[Stamped]]  # sensor -> matched messages in stamp order; sensors with
    #                                  no match are absent; items[pivot][-1] is the pivot message
    live: dict[str, bool]            # liveness of every sensor when the frame was emitted
    dropped: int                     # pivot messages skipped (backlog) since the previous frame
    waited: float                    # now - pivot arrival when emitted


class _SensorState:
    """One sensor's buffer (sorted by stamp, with the stamps alone for bisect) and history."""

    __slots__ = ("backjumps", "discard_up_to", "instep_arrival", "last_arrival", "messages",
                 "newest_stamp", "stamps")

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.messages: list[Stamped] = []
        self.last_arrival: float | None = None  # None: nothing since the last reset
        self.newest_stamp: float | None = None  # newest stamp kept since the last reset
        self.discard_up_to = -math.inf             # stamps <= this can no longer be used
        self.backjumps = 0                         # messages in a row stamped far back
        self.instep_arrival: float | None = None   # last arrival of one that was not

    def insert(self, message: Stamped) -> None:
        index = bisect.bisect_right(self.stamps, message.stamp)
        self.stamps.insert(index, message.stamp)
        self.messages.insert(index, message)

    def evict_oldest(self) -> None:
        del self.stamps[0], self.messages[0]

    def discard(self, up_to: float) -> None:
        """Raise the discard line to ``up_to`` and drop the messages at or below it."""
        self.discard_up_to = max(self.discard_up_to, up_to)
        count = bisect.bisect_right(self.stamps, self.discard_up_to)
        del self.stamps[:count], self.messages[:count]


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a finite {bound} number of seconds, got {value}")
    return value


def _check_names(name: str, names: Sequence[str], known: Sequence[str] | None) -> list[str]:
    names = list(names)
    if not names:
        raise ValueError(f"{name} must name at least one sensor")
    if len(set(names)) != len(names):
        raise ValueError(f"{name} has duplicate names: {names}")
    if known is None:
        if not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"{name} must be non-empty strings, got {names}")
    else:
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"{name} names unknown sensors {unknown}; sensors are {list(known)}")
    return names


class AnymodalSynchronizer:
    """Groups messages of several sensors into frames around a pivot sensor's messages.

    See the module docstring for the exact semantics. ``stats`` counts ``frames``,
    ``dropped_backlog``, ``late``, ``resets``, ``overflow`` and ``backjumped`` since
    construction, ``sensor_stats`` the per-sensor counts (a reset clears neither).
    """

    def __init__(self, sensors: Sequence[str], *, slop: float = 0.05, max_wait: float = 0.1,
                 stale_after: float = 0.5, pivot_order: Sequence[str] | None = None,
                 windows: Mapping[str, float] | None = None, buffer_size: int = 64,
                 backjump: float = 1.0, jump_confirm: int = 3) -> None:
        self.sensors = tuple(_check_names("sensors", sensors, None))
        self.slop = _check_positive("slop", slop)
        self.max_wait = _check_positive("max_wait", max_wait, allow_zero=True)
        self.stale_after = _check_positive("stale_after", stale_after)
        self.backjump = _check_positive("backjump", backjump)
        self.pivot_order = tuple(self.sensors if pivot_order is None
                                 else _check_names("pivot_order", pivot_order, self.sensors))
        windows = dict(windows or {})
        if windows:
            _check_names("windows", list(windows), self.sensors)
        self.windows = {name: _check_positive(f"windows[{name!r}]", w)
                        for name, w in windows.items()}
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
            raise ValueError(f"buffer_size must be an integer >= 1, got {buffer_size!r}")
        self.buffer_size = buffer_size
        if isinstance(jump_confirm, bool) or not isinstance(jump_confirm, int) or jump_confirm < 1:
            raise ValueError(f"jump_confirm must be an integer >= 1, got {jump_confirm!r}")
        self.jump_confirm = jump_confirm
        self._counts = dict.fromkeys(("frames", "dropped_backlog", "resets"), 0)
        self.sensor_stats: dict[str, dict[str, int]] = {
            name: dict.fromkeys(SENSOR_STAT_KEYS, 0) for name in self.sensors}
        self._clear()

    # -- public API -----------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, int]:
        """Counts since construction (a reset clears none): ``frames``, ``dropped_backlog``,
        ``resets``, and the totals over sensors of :attr:`sensor_stats`."""
        totals = {key: sum(c[key] for c in self.sensor_stats.values())
                  for key in SENSOR_STAT_KEYS}
        return {key: self._counts[key] if key in self._counts else totals[key]
                for key in STAT_KEYS}


    def add(self, sensor: str, stamp: float, payload: Any, now: float,
            exact: Any = None) -> None:
        """Buffer one message of ``sensor`` with header ``stamp``, arrived at ``now``;
        ``exact`` (optional) is kept in its :class:`Stamped` as the stamp to publish."""
        if sensor not in self._state:
            raise ValueError(f"unknown sensor {sensor!r}; sensors are {list(self.sensors)}")
        stamp, now = float(stamp), float(now)
        if not (math.isfinite(stamp) and math.isfinite(now)):
            raise ValueError(f"stamp and now must be finite, got stamp={stamp}, now={now}")
        self._observe_clock(now)
        state = self._state[sensor]
        reference = state.newest_stamp if state.newest_stamp is not None else self._last_stamp
        if reference is not None and reference - stamp > self.backjump:
            state.backjumps += 1
            in_step_lately = (state.instep_arrival is not None
                              and now - state.instep_arrival <= self.stale_after)
            if state.backjumps < self.jump_confirm or in_step_lately:
                state.last_arrival = now  # the sensor is alive, its message is not used
                self._count(sensor, "backjumped")
                return
            self._reset_after_jump()
            state = self._state[sensor]
        else:
            state.backjumps = 0
            state.instep_arrival = now
        state.last_arrival = now  # a late message still shows the sensor is alive
        if stamp <= state.discard_up_to:
            self._count(sensor, "late")
            return
        state.insert(Stamped(stamp, now, payload, exact))
        if state.newest_stamp is None or stamp > state.newest_stamp:
            state.newest_stamp = stamp
        if len(state.messages) > self.buffer_size:
            state.evict_oldest()
            self._count(sensor, "overflow")

    def poll(self, now: float) -> Frame | None:
        """Emit the newest ready frame at ``now``, or None when no candidate is ready."""
        now = float(now)
        self._observe_clock(now)
        live = self._live_at(now)
        pivot = self._pivot(live)
        if pivot is None:
            return None
        pivot_state = self._state[pivot]
        first_candidate = self._first_candidate(pivot_state)
        # Every live partner is settled for stamps up to the oldest of their newest stamps.
        settled_up_to = min((self._newest_or_minus_inf(name) for name in self.sensors
                             if name != pivot and live[name]), default=math.inf)
        chosen = None
        for index in range(len(pivot_state.messages) - 1, first_candidate - 1, -1):
            message = pivot_state.messages[index]
            # Compare with arrival + max_wait, the very value next_deadline() returns, so a
            # poll at that deadline emits (now - arrival could round below max_wait).
            if message.stamp <= settled_up_to or now >= message.arrival + self.max_wait:
                chosen = index
                break
        if chosen is None:
            return None

        pivot_message = pivot_state.messages[chosen]
        stamp = pivot_message.stamp
        items: dict[str, list[Stamped]] = {}
        for name in self.sensors:
            if name == pivot:
                matched = self._pivot_items(pivot, chosen)
            elif name in self.windows:
                matched = self._match_window(name, stamp)
            else:
                matched = self._match_nearest(name, stamp)
            if matched:
                items[name] = matched
        used_from_pivot = {id(m) for m in items[pivot]}
        dropped = sum(1 for m in pivot_state.messages[first_candidate:chosen]
                      if id(m) not in used_from_pivot)

        for name, state in self._state.items():
            # Stamps <= s - reach can match no later frame (those have stamps > s); for the
            # pivot, the newest message used is the pivot message itself, so up to s goes.
            up_to = stamp - self.windows.get(name, self.slop)
            if name in items:
                up_to = max(up_to, items[name][-1].stamp)
            state.discard(up_to)
        self._last_stamp = stamp
        self._counts["frames"] += 1
        self._counts["dropped_backlog"] += dropped
        return Frame(stamp=stamp, pivot=pivot, items=items, live=live, dropped=dropped,
                     waited=now - pivot_message.arrival)

    def carry_over(self, previous: "AnymodalSynchronizer") -> None:
        """Take over ``previous``'s buffered messages, liveness, clock, last frame stamp and
        counts, so that new settings (slop, max_wait, stale_after, windows) take effect from
        the next poll and nothing is lost: the frame being formed is formed with them, and
        no sensor looks silent because the settings changed (a fresh synchroniser would make
        the first sensor heard the pivot of a frame of its own). Both must have the same
        sensors; buffers longer than this one's ``buffer_size`` keep their newest messages."""
        if previous.sensors != self.sensors:
            raise ValueError(f"cannot carry over a synchroniser of sensors {previous.sensors} "
                             f"into one of {self.sensors}")
        self._state = previous._state
        for name, state in self._state.items():
            while len(state.messages) > self.buffer_size:
                state.evict_oldest()
                self._count(name, "overflow")
        self._last_stamp, self._latest_now = previous._last_stamp, previous._latest_now
        self._counts = dict(previous._counts)
        for name, counts in previous.sensor_stats.items():
            for key, count in counts.items():
                self.sensor_stats[name][key] += count
        previous._clear()  # the state has one owner

    def live(self, now: float) -> dict[str, bool]:
        """Liveness of every sensor at ``now`` (a back-jump of ``now`` resets first)."""
        now = float(now)
        self._observe_clock(now)
        return self._live_at(now)

    def next_deadline(self) -> float | None:
        """The earliest ``now`` at which a candidate becomes ready by ``max_wait``, or None.

        Candidates are those of the pivot at the largest ``now`` seen.
        """
        if self._latest_now is None:
            return None
        pivot = self._pivot(self._live_at(self._latest_now))
        if pivot is None:
            return None
        state = self._state[pivot]
        candidates = state.messages[self._first_candidate(state):]
        if not candidates:
            return None
        return min(m.arrival for m in candidates) + self.max_wait

    def reset(self) -> None:
        """Forget all messages, liveness, the last frame stamp and the clock; count a reset."""
        self._clear()
        self._counts["resets"] += 1

    # -- internals ------------------------------------------------------------------------

    def _count(self, sensor: str, key: str) -> None:
        self.sensor_stats[sensor][key] += 1

    def _clear(self) -> None:
        self._state = {name: _SensorState() for name in self.sensors}
        self._last_stamp: float | None = None   # stamp of the last emitted frame
        self._latest_now: float | None = None   # largest `now` seen

    def _reset_after_jump(self) -> None:
        latest_now = self._latest_now  # the jump's `now` stays the reference for the next one
        self.reset()
        self._latest_now = latest_now

    def _observe_clock(self, now: float) -> None:
        if self._latest_now is not None and self._latest_now - now > self.backjump:
            self.reset()
        if self._latest_now is None or now > self._latest_now:
            self._latest_now = now

    def _live_at(self, now: float) -> dict[str, bool]:
        return {name: state.last_arrival is not None
                and now - state.last_arrival <= self.stale_after
                for name, state in self._state.items()}

    def _pivot(self, live: Mapping[str, bool]) -> str | None:
        return next((name for name in self.pivot_order if live[name]), None)

    def _first_candidate(self, state: _SensorState) -> int:
        """Index of the first message stamped after the last emitted frame."""
        if self._last_stamp is None:
            return 0
        return bisect.bisect_right(state.stamps, self._last_stamp)

    def _newest_or_minus_inf(self, name: str) -> float:
        newest = self._state[name].newest_stamp
        return -math.inf if newest is None else newest

    def _pivot_items(self, pivot: str, chosen: int) -> list[Stamped]:
        state = self._state[pivot]
        pivot_message = state.messages[chosen]
        if pivot not in self.windows:
            return [pivot_message]
        start = bisect.bisect_right(state.stamps, pivot_message.stamp - self.windows[pivot])
        return state.messages[start:chosen] + [pivot_message]

    def _match_window(self, name: str, stamp: float) -> list[Stamped]:
        state = self._state[name]
        start = bisect.bisect_right(state.stamps, stamp - self.windows[name])
        end = bisect.bisect_right(state.stamps, stamp)
        has_exact = end > start and state.stamps[end - 1] == stamp
        # Stamped at its end, the first message after s holds the window's last part.
        if not has_exact and end < len(state.stamps) and state.stamps[end] - stamp <= self.slop:
            end += 1
        return state.messages[start:end]

    def _match_nearest(self, name: str, stamp: float) -> list[Stamped]:
        state = self._state[name]
        after = bisect.bisect_left(state.stamps, stamp)
        best = None
        best_distance = math.inf
        # The nearest message is the last one before s or the first one at or after it;
        # checking the earlier one first gives it a tie.
        for index in (after - 1, after):
            if 0 <= index < len(state.stamps):
                distance = abs(state.stamps[index] - stamp)
                if distance <= self.slop and distance < best_distance:
                    best, best_distance = state.messages[index], distance
        return [] if best is None else [best]
