"""Tests of the anymodal synchroniser (anyseg_ros.sync) with a fake clock (plain floats).

Scenario tests drive it the way the node does (add each message at its arrival time, poll
after each add and at next_deadline()); the property test feeds random sensor streams with
outages and random poll times and checks every poll against a reference model written
from the module docstring's rules.
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anyseg_ros.sync import AnymodalSynchronizer, Frame, Stamped

SLOP = 0.05
MAX_WAIT = 0.1
STALE_AFTER = 0.5
EVENT_WINDOW = 0.03
EVENT_PERIOD = 0.01
SENSORS = ("camera", "lidar", "events")
LATENCY = {"camera": 0.012, "lidar": 0.008, "events": 0.003}


@dataclass(frozen=True)
class Msg:
    sensor: str
    stamp: float
    arrival: float
    payload: Any  # (sensor, index): unique, so reuse across frames is visible


def stream(sensor: str, stamps, latency: float | None = None, shift: float = 0.0) -> list[Msg]:
    """Messages of one sensor; arrival = stamp + latency (+ shift: a later wall clock)."""
    latency = LATENCY[sensor] if latency is None else latency
    return [Msg(sensor, stamp, round(stamp + latency + shift, 9), (sensor, index))
            for index, stamp in enumerate(stamps)]


def grid(first: float, period: float, last: float, gap: tuple[float, float] | None = None):
    """Stamps first, first + period, ... <= last, without those in [gap[0], gap[1])."""
    stamps = [round(first + k * period, 6) for k in range(round((last - first) / period) + 1)]
    return [s for s in stamps if gap is None or not gap[0] <= s < gap[1]]


def rig(camera_gap=None, lidar_gap=None, last=4.5):
    """Camera 10 Hz, lidar 10 Hz 37 ms after it, 10 ms event packets stamped at their end."""
    return (stream("camera", grid(1.004, 0.1, last, camera_gap))
            + stream("lidar", grid(1.041, 0.1, last + 0.1, lidar_gap))
            + stream("events", grid(1.0, EVENT_PERIOD, last + 0.1)))


def make_sync(**kwargs) -> AnymodalSynchronizer:
    kwargs.setdefault("windows", {"events": EVENT_WINDOW})
    kwargs.setdefault("pivot_order", ["camera", "lidar"])  # an event packet alone is no frame
    return AnymodalSynchronizer(SENSORS, slop=SLOP, max_wait=MAX_WAIT, stale_after=STALE_AFTER,
                                **kwargs)


def drive(sync: AnymodalSynchronizer, messages, end: float | None = None):
    """Feed messages like the node: add, poll, and poll at next_deadline() in between.

    Returns [(emit time, frame)]. Fails if a poll at next_deadline() emits nothing while the
    deadline stays put (the node would spin).
    """
    frames: list[tuple[float, Frame]] = []

    def poll_deadlines(until: float) -> None:
        while (deadline := sync.next_deadline()) is not None and deadline <= until:
            frame = sync.poll(deadline)
            if frame is not None:
                frames.append((deadline, frame))
            else:
                after = sync.next_deadline()
                assert after is None or after > deadline, "poll at next_deadline() emitted nothing"

    for message in sorted(messages, key=lambda m: m.arrival):
        poll_deadlines(message.arrival)
        sync.add(message.sensor, message.stamp, message.payload, message.arrival)
        frame = sync.poll(message.arrival)
        if frame is not None:
            frames.append((message.arrival, frame))
    if end is not None:
        poll_deadlines(end)
    return frames


def payloads(items: list[Stamped]):
    return [m.payload for m in items]


def assert_never_reused(frames):
    seen = set()
    for _, frame in frames:
        for items in frame.items.values():
            for message in items:
                assert message.payload not in seen, f"{message.payload} used twice"
                seen.add(message.payload)


def assert_increasing(frames):
    stamps = [frame.stamp for _, frame in frames]
    assert all(a < b for a, b in itertools.pairwise(stamps)), stamps


def live_at(messages, sensor: str, now: float) -> bool:
    arrivals = [m.arrival for m in messages if m.sensor == sensor and m.arrival <= now]
    return bool(arrivals) and now - max(arrivals) <= STALE_AFTER


def covering_packets(stamp: float, event_stamps):
    """Event packets (stamped at their end, EVENT_PERIOD long) overlapping (s - window, s]."""
    return [e for e in event_stamps if e > stamp - EVENT_WINDOW and e - EVENT_PERIOD < stamp]


# -- scenarios -------------------------------------------------------------------------------


def test_all_sensors_each_camera_frame_once_with_nearest_lidar_and_covering_events():
    messages = rig()
    sync = make_sync()
    frames = drive(sync, messages, end=10.0)
    camera = [m for m in messages if m.sensor == "camera"]
    lidar = [m for m in messages if m.sensor == "lidar"]
    events = [m for m in messages if m.sensor == "events"]

    assert [f.stamp for _, f in frames] == [m.stamp for m in camera]
    # Start-up: lidar has sent nothing when the first camera frame arrives, so it is not
    # live and that frame goes without it.
    assert "lidar" not in frames[0][1].items and not frames[0][1].live["lidar"]
    for (emitted_at, frame), pivot in zip(frames[1:], camera[1:]):
        assert frame.pivot == "camera" and frame.items["camera"][-1].payload == pivot.payload
        nearest = [m for m in lidar if abs(m.stamp - frame.stamp) <= SLOP]
        assert len(nearest) == 1  # the one 37 ms later; the one 63 ms before is beyond slop
        assert payloads(frame.items["lidar"]) == [nearest[0].payload]
        expected_events = covering_packets(frame.stamp, [m.stamp for m in events])
        assert [m.stamp for m in frame.items["events"]] == expected_events
        assert len(expected_events) == 4
        # Emitted as soon as that lidar message settles it, long before max_wait.
        assert emitted_at == nearest[0].arrival
        assert frame.waited == pytest.approx(0.037 + 0.008 - 0.012)
        assert frame.dropped == 0 and all(frame.live.values())
    assert_never_reused(frames)
    assert sync.stats == {"frames": len(camera), "dropped_backlog": 0, "late": 0, "resets": 0,
                          "overflow": 0, "backjumped": 0}


def test_lidar_outage_frames_continue_and_lidar_is_used_again_when_back():
    messages = rig(lidar_gap=(2.0, 3.0))
    sync = make_sync()
    frames = drive(sync, messages, end=10.0)
    camera = [m for m in messages if m.sensor == "camera"]
    lidar = [m for m in messages if m.sensor == "lidar"]
    lidar_back = min(m.arrival for m in lidar if m.stamp > 3.0)  # 3.049

    assert [f.stamp for _, f in frames] == [m.stamp for m in camera]  # none lost
    assert_never_reused(frames)
    arrival_of = {m.stamp: m.arrival for m in camera}
    for emitted_at, frame in frames:
        assert frame.live == {name: live_at(messages, name, emitted_at) for name in SENSORS}
        assert frame.waited <= MAX_WAIT + 1e-9
        if 2.0 <= frame.stamp <= 3.01:  # no lidar message within slop, or lidar stale
            assert "lidar" not in frame.items
        if arrival_of[frame.stamp] > lidar_back:  # pivot arrived after lidar is live again
            assert "lidar" in frame.items
    # While lidar is live but silent, a frame waits exactly max_wait; once stale, none.
    waiting = [f for t, f in frames if 2.0 <= f.stamp and t <= 1.949 + STALE_AFTER]
    assert waiting and all(f.live["lidar"] and f.waited == pytest.approx(MAX_WAIT)
                           for f in waiting)
    stale = [f for t, f in frames if 1.949 + STALE_AFTER < t < lidar_back]
    assert stale and all(not f.live["lidar"] and f.waited < MAX_WAIT for f in stale)
    assert [f.stamp for _, f in frames if "lidar" in f.items][:9] == grid(1.104, 0.1, 1.904)
    assert sync.stats["dropped_backlog"] == 0


def test_camera_outage_lidar_takes_over_then_camera_is_pivot_again():
    messages = rig(camera_gap=(2.0, 3.0))
    sync = make_sync()
    frames = drive(sync, messages, end=10.0)
    camera_stale_at = 1.916 + STALE_AFTER
    camera_back = min(m.arrival for m in messages if m.sensor == "camera" and m.stamp > 3.0)

    assert_increasing(frames)
    assert_never_reused(frames)
    for emitted_at, frame in frames:
        expected_pivot = "lidar" if camera_stale_at < emitted_at < camera_back else "camera"
        assert frame.pivot == expected_pivot, (emitted_at, frame.stamp)
        assert frame.live == {name: live_at(messages, name, emitted_at) for name in SENSORS}
    lidar_frames = [f for _, f in frames if f.pivot == "lidar"]
    # Lidar 2.041 .. 2.341 queued while the silent camera was still the pivot: the first
    # lidar frame is the newest of them and drops the 3 older ones.
    assert [f.stamp for f in lidar_frames] == grid(2.341, 0.1, 2.941)
    assert lidar_frames[0].dropped == 3 and sync.stats["dropped_backlog"] == 3
    events = [m.stamp for m in messages if m.sensor == "events"]
    for frame in lidar_frames:
        assert "camera" not in frame.items
        assert payloads(frame.items["lidar"]) == [("lidar", round((frame.stamp - 1.041) / 0.1))]
        assert [m.stamp for m in frame.items["events"]] == covering_packets(frame.stamp, events)
    camera_frames = [f.stamp for _, f in frames if f.pivot == "camera"]
    assert camera_frames == grid(1.004, 0.1, 4.5, gap=(2.0, 3.0))  # every camera message


def test_backlog_emits_newest_and_drops_older():
    sync = AnymodalSynchronizer(["camera", "lidar"])  # lidar never sends: not live
    for index in range(20):
        sync.add("camera", 1.0 + 0.05 * index, ("camera", index), now=1.01 + 0.05 * index)
    frame = sync.poll(now=2.0)
    assert frame is not None and frame.stamp == pytest.approx(1.95)
    assert frame.items == {"camera": [Stamped(frame.stamp, 1.96, ("camera", 19))]}
    assert frame.dropped == 19 and sync.stats["dropped_backlog"] == 19
    assert frame.live == {"camera": True, "lidar": False}
    assert sync.poll(now=2.0) is None and sync.next_deadline() is None


def test_backlog_emits_newest_settled_and_keeps_newer_ones_until_ready():
    sync = AnymodalSynchronizer(["camera", "lidar"], slop=0.05, max_wait=0.1)
    # A stalled transport delivers 20 camera frames at once; lidar has reached 4.72.
    for index in range(20):
        sync.add("camera", 4.0 + 0.05 * index, ("camera", index), now=5.0)
    sync.add("lidar", 4.72, ("lidar", 0), now=5.0)
    frame = sync.poll(now=5.05)
    assert frame.stamp == pytest.approx(4.70) and frame.dropped == 14
    assert payloads(frame.items["lidar"]) == [("lidar", 0)]
    assert sync.poll(now=5.05) is None  # 4.75 .. 4.95 wait for lidar or max_wait
    assert sync.next_deadline() == 5.0 + 0.1
    frame = sync.poll(sync.next_deadline())
    assert frame.stamp == pytest.approx(4.95) and frame.dropped == 4
    assert "lidar" not in frame.items  # lidar 4.72 was used; nothing else within slop
    assert sync.stats["dropped_backlog"] == 18 and sync.stats["frames"] == 2


def test_max_wait_and_next_deadline():
    sync = AnymodalSynchronizer(["camera", "lidar"], slop=0.05, max_wait=0.1)
    sync.add("lidar", 0.0, ("lidar", 0), now=0.01)  # live, then silent
    sync.add("camera", 0.1, ("camera", 0), now=0.112)
    assert sync.poll(now=0.112) is None
    deadline = sync.next_deadline()
    assert deadline == 0.112 + 0.1
    assert sync.poll(now=deadline - 1e-6) is None
    frame = sync.poll(now=deadline)
    assert frame is not None and frame.waited == pytest.approx(0.1)
    assert frame.items == {"camera": [Stamped(0.1, 0.112, ("camera", 0))]}  # lidar 0.0 too far
    assert sync.next_deadline() is None

    # The partner settles it before max_wait: emitted at once.
    sync.add("camera", 0.2, ("camera", 1), now=0.212)
    assert sync.poll(now=0.22) is None
    sync.add("lidar", 0.23, ("lidar", 1), now=0.24)
    frame = sync.poll(now=0.24)
    assert frame.stamp == 0.2 and frame.waited == pytest.approx(0.028)
    assert payloads(frame.items["lidar"]) == [("lidar", 1)]


def test_exact_boundaries_liveness_settling_and_ties():
    # Binary-exact numbers, so the comparisons are at the boundary exactly.
    sync = AnymodalSynchronizer(["camera", "lidar"], slop=0.25, max_wait=1.0, stale_after=0.5)
    sync.add("lidar", 1.0, ("lidar", 0), now=1.0)
    assert sync.live(now=1.5)["lidar"]  # arrived exactly stale_after ago: still live
    assert not sync.live(now=1.5000001)["lidar"]
    sync.add("lidar", 1.5, ("lidar", 1), now=1.5)
    sync.add("camera", 1.25, ("camera", 0), now=1.5)
    frame = sync.poll(now=1.5)  # lidar reached exactly 1.5 >= 1.25: settled at once
    assert frame.waited == 0
    assert payloads(frame.items["lidar"]) == [("lidar", 0)]  # 0.25 either side: the earlier
    sync.add("camera", 1.5, ("camera", 1), now=1.5)
    frame = sync.poll(now=1.5)  # lidar 1.5 is an exact match, and settles it
    assert payloads(frame.items["lidar"]) == [("lidar", 1)]


@settings(max_examples=200, deadline=None)
@given(arrival=st.floats(0, 1e6), max_wait=st.floats(0, 5), latency=st.floats(0, 0.2))
def test_poll_at_next_deadline_always_emits(arrival, max_wait, latency):
    # now - arrival can round below max_wait at now = arrival + max_wait; the node would spin.
    sync = AnymodalSynchronizer(["camera", "lidar"], max_wait=max_wait, stale_after=10.0)
    sync.add("lidar", arrival - 1.0, "old lidar", now=arrival)  # live and silent
    sync.add("camera", arrival - latency, "camera", now=arrival)
    deadline = sync.next_deadline()
    assert deadline == arrival + max_wait
    if deadline > arrival:
        assert sync.poll(now=arrival) is None
    assert sync.poll(now=deadline) is not None


def test_never_reuse_a_partner_and_late_messages():
    sync = AnymodalSynchronizer(["camera", "lidar"], slop=0.05, max_wait=0.1)
    sync.add("lidar", 1.03, ("lidar", 0), now=1.035)
    sync.add("camera", 1.00, ("camera", 0), now=1.04)
    first = sync.poll(now=1.04)
    assert payloads(first.items["lidar"]) == [("lidar", 0)]
    # Lidar 1.03 would be nearest to 1.02 too, but it is used: the frame goes without it.
    sync.add("camera", 1.02, ("camera", 1), now=1.05)
    second = sync.poll(now=1.05)
    assert second.stamp == 1.02 and "lidar" not in second.items

    sync.add("camera", 1.01, ("camera", 2), now=1.06)  # older than the last frame: late
    sync.add("lidar", 1.03, ("lidar", 1), now=1.06)     # at or below the newest used lidar
    assert sync.stats["late"] == 2
    assert sync.poll(now=1.06) is None
    assert sync.live(now=1.06) == {"camera": True, "lidar": True}  # late still means alive
    # Not late: lidar 1.035 is above its used one and can still match a later frame.
    sync.add("lidar", 1.035, ("lidar", 2), now=1.07)
    sync.add("camera", 1.06, ("camera", 3), now=1.08)
    assert sync.poll(now=1.08) is None  # lidar (live) has not reached 1.06 yet
    third = sync.poll(now=sync.next_deadline())
    assert third.stamp == 1.06 and payloads(third.items["lidar"]) == [("lidar", 2)]
    assert sync.stats["late"] == 2 and sync.stats["frames"] == 3


def test_pruned_partner_message_is_late_but_unused_near_one_is_kept():
    sync = AnymodalSynchronizer(["camera", "lidar"], slop=0.05, max_wait=0.0)
    sync.add("lidar", 0.5, ("lidar", 0), now=0.9)
    sync.add("camera", 1.0, ("camera", 0), now=1.0)
    assert "lidar" not in sync.poll(now=1.0).items
    sync.add("lidar", 0.94, ("lidar", 1), now=1.01)  # <= 1.0 - slop: can match no later frame
    assert sync.stats["late"] == 1
    sync.add("lidar", 0.98, ("lidar", 2), now=1.01)  # within slop of a frame at <= 1.03
    sync.add("camera", 1.02, ("camera", 1), now=1.02)
    assert payloads(sync.poll(now=1.02).items["lidar"]) == [("lidar", 2)]
    assert sync.stats["late"] == 1


def test_bag_loop_resets_and_frames_come_again():
    first_pass = rig(last=2.5)
    # The bag restarts: the same stamps again while the wall clock goes on.
    second_pass = [Msg(m.sensor, m.stamp, round(m.arrival + 2.0, 9), (m.payload, "loop"))
                   for m in first_pass]
    sync = make_sync()
    frames = drive(sync, first_pass + second_pass, end=10.0)
    camera_stamps = grid(1.004, 0.1, 2.5)
    # The loop is taken for a jump at the first back-stamped message of a sensor that is the
    # third in a row and comes more than stale_after after its last in-step one: events
    # (last in step at 2.603) at 1.11, arrived at 3.113. What came before is dropped (events
    # 1.0 to 1.10, camera 1.004, lidar 1.041), the first camera frame of the pass with them.
    assert sync.stats["resets"] == 1 and sync.stats["late"] == 0
    assert sync.stats["backjumped"] == 13
    assert {k: v["backjumped"] for k, v in sync.sensor_stats.items()} == {
        "camera": 1, "lidar": 1, "events": 11}
    assert [f.stamp for _, f in frames] == camera_stamps + camera_stamps[1:]
    second = [f for _, f in frames[len(camera_stamps):]]
    assert all(f.pivot == "camera" and f.items["camera"][-1].payload[1] == "loop"
               for f in second)
    # The reset forgot liveness: as at start-up, lidar is in the camera frames from the one
    # after its first message on.
    with_lidar = [f.stamp for _, f in frames if "lidar" in f.items]
    assert with_lidar == camera_stamps[1:] + camera_stamps[2:]


def test_sim_time_reset_when_now_goes_back():
    sync = make_sync()
    frames = drive(sync, rig(last=2.5), end=3.0)
    assert sync.live(now=2.9)["camera"]
    # Sim time restarts at 1.0 (now jumps back 1.9 s > backjump): liveness is cleared too.
    assert sync.live(now=1.0) == dict.fromkeys(SENSORS, False)
    assert sync.stats["resets"] == 1 and sync.next_deadline() is None
    again = drive(sync, [Msg(m.sensor, m.stamp, m.arrival, ("again", m.payload))
                         for m in rig(last=2.5)], end=3.0)
    assert [f.stamp for _, f in again] == [f.stamp for _, f in frames]
    assert sync.stats["resets"] == 1


def test_small_backward_steps_do_not_reset():
    sync = AnymodalSynchronizer(["camera"], backjump=1.0)
    sync.add("camera", 10.0, "a", now=10.0)
    assert sync.poll(now=10.0).stamp == 10.0
    sync.add("camera", 9.5, "b", now=9.5)  # now and stamp 0.5 s back: a late message
    assert sync.stats["resets"] == 0 and sync.stats["late"] == 1
    # Stamps 1.1 s before the last frame: dropped until the third in a row shows a jump.
    sync.add("camera", 8.9, "c", now=10.1)
    sync.add("camera", 8.95, "d", now=10.15)
    assert sync.stats["resets"] == 0 and sync.stats["backjumped"] == 2
    assert sync.poll(now=10.15) is None
    sync.add("camera", 8.99, "e", now=10.2)
    assert sync.stats["resets"] == 1
    assert sync.poll(now=10.2).items["camera"][0].payload == "e"


def test_a_stray_old_message_is_dropped_and_output_never_goes_back():
    # One lidar message stamped 8 s back, then a second lidar publisher whose clock is 5 s
    # behind, interleaved with the right one: neither clears the other sensors, no frame is
    # stamped before the last, and the old messages are counted for lidar.
    messages = rig(last=4.0)
    messages.append(Msg("lidar", 2.0 - 8.0, 2.05, "stray"))
    messages += [Msg("lidar", round(s - 5.0, 6), round(s + 0.04, 9), "behind")
                 for s in grid(3.0, 0.1, 4.0)]
    sync = make_sync()
    frames = drive(sync, messages, end=10.0)
    stamps = [f.stamp for _, f in frames]
    assert stamps == grid(1.004, 0.1, 4.0)
    assert sync.stats["resets"] == 0
    assert sync.sensor_stats["lidar"]["backjumped"] == 1 + len(grid(3.0, 0.1, 4.0))
    assert sync.sensor_stats["camera"]["backjumped"] == 0
    assert all(f.items["lidar"][0].payload != "behind" for _, f in frames if "lidar" in f.items)


def test_a_faster_publisher_behind_never_resets_while_the_right_one_publishes():
    # A second lidar publisher 5 s behind at 30 Hz: three back-stamped messages in a row
    # happen all the time, but the right lidar keeps arriving in step, so no reset, and the
    # output never goes back.
    messages = rig(last=4.0)
    messages += [Msg("lidar", round(s - 5.0, 6), round(s + 0.005, 9), "behind")
                 for s in grid(1.5, 1 / 30, 4.0)]
    sync = make_sync()
    frames = drive(sync, messages, end=10.0)
    assert sync.stats["resets"] == 0
    stamps = [f.stamp for _, f in frames]
    assert stamps == grid(1.004, 0.1, 4.0)


def test_sensor_with_clock_offset_resets_once_not_on_every_message():
    # Lidar stamps run 5 s behind: its first messages look like a jump (one reset at the
    # third, 2.241), after that its own stamps are consistent; it is live but never settles a
    # frame. (Just after the reset it is the only live sensor, so one lidar-only frame.)
    messages = (stream("camera", grid(1.004, 0.1, 4.0))
                + stream("lidar", [s - 5.0 for s in grid(2.041, 0.1, 4.0)], shift=5.0))
    sync = AnymodalSynchronizer(["camera", "lidar"], slop=SLOP, max_wait=MAX_WAIT)
    frames = drive(sync, messages, end=10.0)
    assert sync.stats["resets"] == 1
    after = [f for t, f in frames if t > 2.25]
    assert [f.stamp for f in after] == grid(2.304, 0.1, 4.0)
    assert all(f.live["lidar"] and f.waited == pytest.approx(MAX_WAIT) and "lidar" not in f.items
               for f in after)


def test_windowed_pivot_includes_its_own_window():
    sync = AnymodalSynchronizer(["events", "camera"], windows={"events": 0.025})
    for index in range(5):
        stamp = round(1.01 + 0.01 * index, 6)
        sync.add("events", stamp, ("events", index), now=stamp + 0.001)
    frame = sync.poll(now=1.06)
    assert frame.pivot == "events" and frame.stamp == 1.05
    assert [m.stamp for m in frame.items["events"]] == [1.03, 1.04, 1.05]  # (1.025, 1.05]
    assert frame.dropped == 2  # 1.01 and 1.02: outside the window


def test_windowed_partner_takes_window_and_first_packet_after():
    sync = AnymodalSynchronizer(["camera", "events"], windows={"events": 0.03}, slop=0.05)
    for index in range(10):
        stamp = round(0.95 + 0.01 * index, 6)  # 0.95 .. 1.04
        sync.add("events", stamp, ("events", index), now=1.05)
    sync.add("camera", 1.005, "camera", now=1.05)
    frame = sync.poll(now=1.05)
    # (0.975, 1.005] plus 1.01, which holds (1.0, 1.01]; 1.02 .. 1.04 stay for later frames.
    assert [m.stamp for m in frame.items["events"]] == [0.98, 0.99, 1.0, 1.01]
    sync.add("camera", 1.035, "camera 2", now=1.06)
    frame = sync.poll(now=1.06)
    assert [m.stamp for m in frame.items["events"]] == [1.02, 1.03, 1.04]
    # A packet stamped exactly at s ends the window: the next one is not needed.
    sync.add("events", 1.05, "e5", now=1.07)
    sync.add("events", 1.06, "e6", now=1.07)
    sync.add("camera", 1.05, "camera 3", now=1.07)
    assert payloads(sync.poll(now=1.07).items["events"]) == ["e5"]


def test_overflow_evicts_oldest():
    sync = AnymodalSynchronizer(["camera", "lidar"], buffer_size=4)
    for index in range(6):
        sync.add("lidar", round(1.0 + 0.01 * index, 6), ("lidar", index), now=1.06)
    assert sync.stats["overflow"] == 2
    sync.add("camera", 1.005, "camera", now=1.07)
    frame = sync.poll(now=1.07)
    assert payloads(frame.items["lidar"]) == [("lidar", 2)]  # 1.00 and 1.01 were evicted


def test_pivot_order_subset_and_custom_order():
    only_camera = AnymodalSynchronizer(["camera", "lidar"], pivot_order=["camera"])
    only_camera.add("lidar", 1.0, "lidar", now=1.0)
    assert only_camera.poll(now=2.0) is None and only_camera.next_deadline() is None
    lidar_first = AnymodalSynchronizer(["camera", "lidar"], pivot_order=["lidar", "camera"])
    lidar_first.add("camera", 1.02, "camera", now=1.0)
    lidar_first.add("lidar", 1.01, "lidar", now=1.01)
    frame = lidar_first.poll(now=1.01)
    assert frame.pivot == "lidar" and payloads(frame.items["camera"]) == ["camera"]


def test_reset_clears_state_but_not_stats():
    sync = make_sync()
    drive(sync, rig(last=1.5), end=2.0)
    frames = sync.stats["frames"]
    assert frames > 0
    sync.reset()
    assert sync.live(now=1.6) == dict.fromkeys(SENSORS, False)
    assert sync.poll(now=1.6) is None and sync.next_deadline() is None
    assert sync.stats["resets"] == 1 and sync.stats["frames"] == frames
    sync.add("camera", 1.004, "again", now=1.6)  # older than the last frame: fine after reset
    assert sync.poll(now=1.6).items["camera"][0].payload == "again"
    assert sync.stats["late"] == 0


@pytest.mark.parametrize("kwargs, argument", [
    ({"sensors": []}, "sensors"),
    ({"sensors": ["camera", "camera"]}, "sensors"),
    ({"sensors": ["camera", ""]}, "sensors"),
    ({"slop": 0}, "slop"),
    ({"slop": -0.1}, "slop"),
    ({"slop": math.nan}, "slop"),
    ({"max_wait": -0.1}, "max_wait"),
    ({"stale_after": 0}, "stale_after"),
    ({"backjump": 0}, "backjump"),
    ({"jump_confirm": 0}, "jump_confirm"),
    ({"pivot_order": ["radar"]}, "pivot_order"),
    ({"pivot_order": []}, "pivot_order"),
    ({"pivot_order": ["camera", "camera"]}, "pivot_order"),
    ({"windows": {"radar": 0.03}}, "windows"),
    ({"windows": {"events": 0.0}}, "windows"),
    ({"buffer_size": 0}, "buffer_size"),
    ({"buffer_size": 2.5}, "buffer_size"),
])
def test_constructor_validates_arguments(kwargs, argument):
    kwargs = {"sensors": SENSORS, **kwargs}
    with pytest.raises(ValueError, match=argument):
        AnymodalSynchronizer(**kwargs)


def test_add_validates_sensor_and_times():
    sync = make_sync()
    with pytest.raises(ValueError, match="unknown sensor 'radar'"):
        sync.add("radar", 1.0, None, now=1.0)
    with pytest.raises(ValueError, match="finite"):
        sync.add("camera", math.nan, None, now=1.0)
    assert AnymodalSynchronizer(SENSORS, max_wait=0).max_wait == 0


# -- property test against a reference model ---------------------------------------------


class Reference:
    """The module docstring's rules, written plainly (quadratic, no buffers, no late logic).

    A message of sensor X is available when it is unused and stamped above X's floor: the
    newest stamp X gave a frame and the stamps of frames X was the pivot of. (The
    synchroniser also discards stamps <= s - slop / s - window after a frame; such messages
    can match no later frame, so the reference need not model that.)
    """

    def __init__(self, sync: AnymodalSynchronizer):
        self.sync = sync
        self.log: dict[str, list[Msg]] = {name: [] for name in sync.sensors}
        self.last_arrival: dict[str, float] = {}
        self.used: set = set()
        self.floor = dict.fromkeys(sync.sensors, -math.inf)
        self.last_stamp = -math.inf

    def add(self, message: Msg) -> None:
        self.log[message.sensor].append(message)
        self.last_arrival[message.sensor] = message.arrival

    def live(self, now: float) -> dict[str, bool]:
        return {name: name in self.last_arrival
                and now - self.last_arrival[name] <= self.sync.stale_after
                for name in self.sync.sensors}

    def available(self, sensor: str) -> list[Msg]:
        return sorted((m for m in self.log[sensor]
                       if m.payload not in self.used and m.stamp > self.floor[sensor]),
                      key=lambda m: m.stamp)

    def candidates(self, pivot: str | None) -> list[Msg]:
        if pivot is None:
            return []
        return [m for m in self.available(pivot) if m.stamp > self.last_stamp]

    def ready(self, message: Msg, pivot: str, live: dict[str, bool], now: float) -> bool:
        if now >= message.arrival + self.sync.max_wait:
            return True
        return all(max(m.stamp for m in self.log[name]) >= message.stamp
                   for name in self.sync.sensors if name != pivot and live[name])

    def expected_items(self, pivot: str, chosen: Msg) -> dict[str, list]:
        s, slop, windows = chosen.stamp, self.sync.slop, self.sync.windows
        items = {}
        for name in self.sync.sensors:
            available = self.available(name)
            if name == pivot:
                earlier = ([m for m in available if s - windows[name] < m.stamp < s]
                           if name in windows else [])
                matched = earlier + [chosen]
            elif name in windows:
                matched = [m for m in available if s - windows[name] < m.stamp <= s]
                after = [m for m in available if s < m.stamp and m.stamp - s <= slop]
                if after and not any(m.stamp == s for m in matched):
                    matched.append(after[0])
            else:
                near = [m for m in available if abs(m.stamp - s) <= slop]
                matched = [min(near, key=lambda m: (abs(m.stamp - s), m.stamp))] if near else []
            if matched:
                items[name] = [m.payload for m in matched]
        return items

    def check_poll(self, now: float, frame: Frame | None) -> None:
        """Assert that poll(now) returned exactly what the rules say, then record it."""
        sync = self.sync
        live = self.live(now)
        assert sync.live(now) == live
        pivot = next((name for name in sync.pivot_order if live[name]), None)
        candidates = self.candidates(pivot)
        ready = [m for m in candidates if self.ready(m, pivot, live, now)]
        if not ready:
            assert frame is None
        else:
            chosen = ready[-1]  # the newest ready one
            assert frame is not None
            assert (frame.pivot, frame.stamp, frame.live) == (pivot, chosen.stamp, live)
            assert frame.waited == now - chosen.arrival
            items = self.expected_items(pivot, chosen)
            assert {name: payloads(ms) for name, ms in frame.items.items()} == items
            assert frame.dropped == sum(1 for m in candidates
                                        if m.stamp < chosen.stamp and m.payload not in items[pivot])
            self.check_invariants(frame, now)
            for name, matched in frame.items.items():
                self.used.update(payloads(matched))
                self.floor[name] = max(self.floor[name], matched[-1].stamp)
            self.floor[pivot] = max(self.floor[pivot], frame.stamp)
            self.last_stamp = frame.stamp
        # Nothing ready is left behind (so nothing starves), and the deadline is exact.
        remaining = self.candidates(pivot)
        assert not any(self.ready(m, pivot, live, now) for m in remaining)
        expected_deadline = (min(m.arrival for m in remaining) + sync.max_wait
                             if remaining else None)
        assert sync.next_deadline() == expected_deadline

    def check_invariants(self, frame: Frame, now: float) -> None:
        """The guarantees stated plainly, independent of expected_items."""
        sync, s = self.sync, frame.stamp
        assert s > self.last_stamp
        assert frame.pivot == next(n for n in sync.pivot_order if frame.live[n])
        for name, matched in frame.items.items():
            assert [m.stamp for m in matched] == sorted(m.stamp for m in matched)
            for message in matched:
                assert message.payload not in self.used
                assert message.payload[0] == name
                if name in sync.windows:
                    assert s - sync.windows[name] < message.stamp <= s + sync.slop
                else:
                    assert abs(message.stamp - s) <= sync.slop
        pivot_message = frame.items[frame.pivot][-1]
        assert pivot_message.stamp == s
        settled = all(not frame.live[name] or max(m.stamp for m in self.log[name]) >= s
                      for name in sync.sensors if name != frame.pivot)
        assert settled or now >= pivot_message.arrival + sync.max_wait


@st.composite
def scenarios(draw):
    # Hypothesis draws the parameters; a seeded generator draws the per-message noise
    # (drawing hundreds of values from Hypothesis would exceed its data budget).
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    floats = st.floats
    windows = {"events": draw(floats(0.01, 0.05))}
    if draw(st.booleans()):
        windows["lidar"] = draw(floats(0.02, 0.1))
    order = draw(st.one_of(st.just(("camera", "lidar")), st.permutations(SENSORS)))
    config = {"slop": draw(floats(0.005, 0.08)), "max_wait": draw(floats(0.0, 0.2)),
              "stale_after": draw(floats(0.1, 0.6)), "windows": windows,
              "buffer_size": 10_000, "pivot_order": order[:draw(st.integers(1, 3))]}
    duration, start = 2.0, 100.0
    messages = []
    for name, (low_hz, high_hz) in zip(SENSORS, [(5, 30), (5, 20), (20, 100)]):
        period = 1.0 / draw(floats(low_hz, high_hz))
        jitter = draw(floats(0.0, 0.3)) * period  # < period / 2: stamps keep their order
        latency, spread = rng.uniform(0.0, 0.06), draw(floats(0.0, 0.1))  # spread reorders
        outages = [(t, t + rng.uniform(0.05, 0.8))
                   for t in (rng.uniform(0, duration) for _ in range(draw(st.integers(0, 2))))]
        t = rng.uniform(0, period)
        while t < duration:
            if not any(a <= t < b for a, b in outages):
                stamp = start + t + rng.uniform(-jitter, jitter)
                arrival = stamp + latency + rng.uniform(0, spread)
                messages.append(Msg(name, stamp, arrival, (name, len(messages))))
            t += period
    # Polls at random times, and (sometimes) right after an arrival, as the node does.
    polls, t = [], start
    while t < start + duration + 0.5:
        t += rng.uniform(0.001, 0.15)
        polls.append(t)
    after_arrival = draw(floats(0.0, 1.0))
    polls += [m.arrival for m in messages if rng.random() < after_arrival]
    return config, messages, polls


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_random_streams_match_reference(scenario):
    config, messages, polls = scenario
    sync = AnymodalSynchronizer(SENSORS, **config)
    reference = Reference(sync)
    timeline = sorted([(m.arrival, 0, m) for m in messages] + [(t, 1, None) for t in polls],
                      key=lambda entry: entry[:2])  # at equal times the message comes first
    frames = []
    for now, _, message in timeline:
        if message is not None:
            sync.add(message.sensor, message.stamp, message.payload, now)
            reference.add(message)
        else:
            frame = sync.poll(now)
            reference.check_poll(now, frame)
            if frame is not None:
                frames.append((now, frame))
    assert_increasing(frames)
    assert_never_reused(frames)
    assert sync.stats["frames"] == len(frames)
    assert sync.stats["dropped_backlog"] == sum(f.dropped for _, f in frames)
    assert sync.stats["resets"] == 0 and sync.stats["overflow"] == 0


def test_the_exact_stamp_given_with_a_message_comes_back_with_it():
    sync = AnymodalSynchronizer(["camera"])
    sync.add("camera", 1_700_000_000.123456789, "a", now=1.0, exact=(1_700_000_000, 123_456_789))
    item = sync.poll(now=1.0).items["camera"][0]
    assert item.exact == (1_700_000_000, 123_456_789) and item.payload == "a"


def test_new_settings_carried_over_keep_the_frame_being_formed():
    """A LiDAR sweep stamped 0.07 s after the image is buffered, then the settings change
    (slop 0.05 -> 0.1, as a dynamic parameter does). Carried over, the buffered sweep, the
    LiDAR's liveness and the counts survive and the new slop joins it to the image; a fresh
    synchroniser (the control) has lost both and makes a camera-only frame."""
    def before_change():
        sync = AnymodalSynchronizer(["camera", "lidar"], slop=0.05, max_wait=0.1)
        sync.add("camera", 0.9, "c0", now=0.91)
        sync.add("lidar", 0.9, "l0", now=0.91)
        assert sync.poll(0.91).stamp == 0.9
        sync.add("lidar", 1.07, "l1", now=1.08)
        assert sync.poll(1.08) is None  # no camera message yet
        return sync

    old = before_change()
    new = AnymodalSynchronizer(["camera", "lidar"], slop=0.1, max_wait=0.1)
    new.carry_over(old)
    assert new.live(1.09) == {"camera": True, "lidar": True}
    new.add("camera", 1.0, "c1", now=1.09)
    frame = new.poll(1.09)  # the LiDAR is live and has sent 1.07 >= 1.0: settled, no wait
    assert frame.stamp == 1.0 and [m.payload for m in frame.items["lidar"]] == ["l1"]
    assert new.stats["frames"] == 2 and new.stats["resets"] == 0

    old = before_change()
    fresh = AnymodalSynchronizer(["camera", "lidar"], slop=0.1, max_wait=0.1)
    fresh.add("camera", 1.0, "c1", now=1.09)
    frame = fresh.poll(1.09)
    assert frame.stamp == 1.0 and "lidar" not in frame.items


def test_carry_over_keeps_counts_trims_buffers_and_needs_the_same_sensors():
    old = AnymodalSynchronizer(["camera", "lidar"], buffer_size=8)
    for k in range(6):
        old.add("lidar", 1.0 + 0.1 * k, k, now=1.0 + 0.1 * k)
    old.poll(1.6)  # the lidar pivots (no camera): frame 1.5, discards the rest
    old.add("lidar", 1.2, "late", now=1.7)
    assert old.sensor_stats["lidar"]["late"] == 1
    for k in range(4):
        old.add("lidar", 2.0 + 0.01 * k, f"n{k}", now=1.7)
    small = AnymodalSynchronizer(["camera", "lidar"], buffer_size=2)
    small.carry_over(old)
    assert small.sensor_stats["lidar"]["late"] == 1 and small.stats["frames"] == 1
    assert small.sensor_stats["lidar"]["overflow"] == 2  # 4 buffered, 2 kept: the newest
    frame = small.poll(1.7)
    assert frame.items["lidar"][-1].payload == "n3"
    with pytest.raises(ValueError, match="carry over"):
        AnymodalSynchronizer(["camera"]).carry_over(small)
