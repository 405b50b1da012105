"""event_camera_msgs/EventPacket: the decoders on real driver recordings (the upstream tests'
expected values as the oracle), the evt3 package and numpy agreeing, our encoder through the
decoder, bad packets, the camera clock mapped to ROS time, and the session on a real
Prophesee recording.

Real recordings: ../shared/data/real/event_camera_bags (README there). Where that folder is
absent (a machine without the shared data), the tests that read it skip, saying so.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from anyseg_ros import conversions as conv
from anyseg_ros.conversions import event_packets as ep
from anyseg_ros.events import EventDecoder, EventPacketStream, SensorClock, encode_evt3
from anyseg_ros.tools import bag as bags

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real" / "event_camera_bags"
EVT3_BAG, CMP_BAG = REAL / "test_events_1", REAL / "test_events_2"
try:
    import evt3  # noqa: F401
    HAVE_EVT3 = True
except ImportError:
    HAVE_EVT3 = False
needs_evt3 = pytest.mark.skipif(not HAVE_EVT3, reason="the evt3 package is not installed "
                                "(no wheel for this platform): only the numpy decoder runs")


def _packets(bag: Path) -> list:
    if not bag.is_dir():
        pytest.skip(f"{bag} is not on this machine (the shared real data)")
    return [m.decode() for m in bags.read_bag(bag)]


@pytest.fixture(scope="module")
def evt3_packets():
    return _packets(EVT3_BAG)


@pytest.fixture(scope="module")
def cmp_packets():
    return _packets(CMP_BAG)


def _packet(events: bytes, encoding="evt3", width=640, height=480, time_base=0, seq=0,
            stamp_ns=1_700_000_000_000_000_000, big=False):
    return SimpleNamespace(
        header=SimpleNamespace(stamp=SimpleNamespace(sec=stamp_ns // 10**9,
                                                     nanosec=stamp_ns % 10**9), frame_id="ev"),
        height=height, width=width, seq=seq, time_base=time_base, encoding=encoding,
        is_bigendian=big, events=np.frombuffer(events, np.uint8))


# -- the real recordings, against the upstream decoder's expected values -----------------
def test_evt3_recording_gives_the_upstream_counts_and_time_sum(evt3_packets):
    """test_1.py of event_camera_py: 218291 OFF, 125183 ON, and the sum of every CD and
    trigger time in (raw sensor) microseconds 2885601049874."""
    decoder = EventDecoder(backend="numpy", keep_triggers=True)
    off = on = 0
    total_us = 0
    for packet in evt3_packets:
        ev = decoder.decode(packet)
        off += int(np.count_nonzero(ev.p == 0))
        on += int(np.count_nonzero(ev.p == 1))
        total_us += int((ev.t // 1000).sum()) + int((decoder.last_triggers.t // 1000).sum())
        assert ev.t.dtype == np.int64 and ev.x.dtype == np.uint16 and ev.p.dtype == np.uint8
    assert (off, on) == (218291, 125183)
    assert total_us == 2885601049874
    assert decoder.triggers == 4157  # upstream: 2078 rising (and the falling edges)


def test_libcaer_cmp_recording_gives_the_upstream_counts_and_times(cmp_packets):
    """test_2.py: 360223 OFF, 211043 ON; upstream reports microseconds relative to the first
    event, whose sum is 335555680277; the first event is at time_base (1744227144732712 us)."""
    assert {p.encoding for p in cmp_packets} == {"libcaer_cmp"}
    decoder = EventDecoder()
    events = [decoder.decode(p) for p in cmp_packets]
    t = np.concatenate([e.t for e in events])
    p = np.concatenate([e.p for e in events])
    assert (int(np.count_nonzero(p == 0)), int(np.count_nonzero(p == 1))) == (360223, 211043)
    assert int(t[0]) == cmp_packets[0].time_base == 1744227144732712000
    us = t // 1000
    assert int((us - us[0]).sum()) == 335555680277
    # every packet's events lie at or after its own time_base, within 16.8 s of it
    for packet, ev in zip(cmp_packets, events):
        assert ev.t.min() >= packet.time_base and ev.t.max() < packet.time_base + 2**24 * 1000


def test_a_bag_whose_metadata_names_no_storage_is_read():
    """test_events_2's metadata.yaml has storage_identifier "" (as recorded upstream)."""
    if not CMP_BAG.is_dir():
        pytest.skip(f"{CMP_BAG} is not on this machine (the shared real data)")
    assert 'storage_identifier: ""' in (CMP_BAG / "metadata.yaml").read_text()
    assert bags.bag_topics(CMP_BAG) == {"/event_camera/events": (bags.EVENT_PACKET, 100)}


@needs_evt3
def test_evt3_package_and_numpy_decode_the_recording_alike(evt3_packets):
    native, numpy = EventDecoder(backend="evt3"), EventDecoder(backend="numpy")
    assert native.backend == "evt3"
    for packet in evt3_packets:
        a, b = native.decode(packet), numpy.decode(packet)
        for name in ("t", "x", "y", "p"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert native.triggers == numpy.triggers == 4157


# -- EVT 3.0 streams built word by word --------------------------------------------------
def _word(code, value):
    return (code << 12) | value


def _random_evt3_stream(rng, n_groups=400, width=640, height=480):
    """Words as a Prophesee camera writes them, with every kind: time (crossing the 24-bit
    wrap), rows, single events, 12- and 8-bit vectors, triggers, OTHERS + CONTINUED."""
    words, t = [], (1 << 24) - 300_000  # 0.3 s before the counter wraps
    high = None
    for _ in range(n_groups):
        t += int(rng.integers(0, 3000))
        t24 = t % (1 << 24)
        if high != t24 >> 12:
            high = t24 >> 12
            words.append(_word(ep.EVT3_TIME_HIGH, high))
        words.append(_word(ep.EVT3_TIME_LOW, t24 & 0xFFF))
        words.append(_word(ep.EVT3_ADDR_Y, int(rng.integers(0, height))))
        kind = rng.integers(0, 5)
        if kind == 0:
            words.append(_word(ep.EVT3_ADDR_X, (int(rng.integers(0, 2)) << 11)
                               | int(rng.integers(0, width))))
        elif kind in (1, 2):
            base = int(rng.integers(0, width - 24))
            words.append(_word(ep.EVT3_VECT_BASE_X, (int(rng.integers(0, 2)) << 11) | base))
            words.append(_word(ep.EVT3_VECT_12, int(rng.integers(0, 1 << 12))))
            words.append(_word(ep.EVT3_VECT_8, int(rng.integers(0, 1 << 8))))
        elif kind == 3:
            words.append(_word(ep.EVT3_EXT_TRIGGER, (int(rng.integers(0, 4)) << 8)
                               | int(rng.integers(0, 2))))
        else:
            words += [_word(ep.EVT3_OTHERS, 0x018), _word(ep.EVT3_CONTINUED_12, 0x123),
                      _word(ep.EVT3_CONTINUED_4, 0x5)]
    return np.array(words, dtype="<u2")


def _split(words, rng, parts=7):
    cuts = np.sort(rng.choice(np.arange(1, words.size), parts - 1, replace=False))
    return np.split(words, cuts)


def _decode_all(decoder, chunks, **packet):
    out = [decoder.decode(_packet(c.tobytes(), **packet)) for c in chunks]
    return ep.CdEvents(*(np.concatenate([getattr(e, f) for e in out]) for f in ep.CdEvents._fields))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_evt3_decoder_follows_the_words(seed):
    """Vectors expand bit by bit from their base, triggers are counted not decoded, the
    24-bit microsecond counter is unwrapped, and packet borders anywhere change nothing."""
    rng = np.random.default_rng(seed)
    words = _random_evt3_stream(rng)
    whole = _decode_all(EventDecoder(backend="numpy"), [words])
    split = _decode_all(EventDecoder(backend="numpy"), _split(words, rng))
    for name in ep.CdEvents._fields:
        np.testing.assert_array_equal(getattr(whole, name), getattr(split, name))
    codes = words >> 12
    vector_bits = sum(bin(int(w) & 0xFFF).count("1") for w in words[codes == ep.EVT3_VECT_12])
    vector_bits += sum(bin(int(w) & 0xFF).count("1") for w in words[codes == ep.EVT3_VECT_8])
    assert whole.count == int(np.count_nonzero(codes == ep.EVT3_ADDR_X)) + vector_bits
    assert (np.diff(whole.t) >= 0).all() and whole.t.max() > (1 << 24) * 1000  # unwrapped


@needs_evt3
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evt3_package_and_numpy_agree_on_every_word_kind(seed):
    rng = np.random.default_rng(seed)
    chunks = _split(_random_evt3_stream(rng), rng)
    a = _decode_all(EventDecoder(backend="evt3"), chunks)
    b = _decode_all(EventDecoder(backend="numpy"), chunks)
    for name in ep.CdEvents._fields:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_our_evt3_encoder_round_trips_through_the_decoder():
    rng = np.random.default_rng(5)
    n = 20_000
    t_us = np.sort(rng.integers(7_000_000, 7_000_000 + 20_000_000, n))  # 20 s: one wrap
    x, y = rng.integers(0, 1280, n), rng.integers(0, 720, n)
    p = rng.integers(0, 2, n)
    decoder, got = EventDecoder(backend="numpy"), []
    for part in np.array_split(np.arange(n), 40):
        data = encode_evt3(t_us[part], x[part], y[part], p[part])
        got.append(decoder.decode(_packet(data, width=1280, height=720)))
    ev = ep.CdEvents(*(np.concatenate([getattr(e, f) for e in got]) for f in ep.CdEvents._fields))
    np.testing.assert_array_equal(ev.t, t_us * 1000)
    np.testing.assert_array_equal(ev.x, x)
    np.testing.assert_array_equal(ev.y, y)
    np.testing.assert_array_equal(ev.p, p)
    # each packet starts with its TIME_HIGH: one lost on the way costs only its own events
    parts = np.array_split(np.arange(n), 40)
    decoder = EventDecoder(backend="numpy")
    for k, part in enumerate(parts):
        data = encode_evt3(t_us[part], x[part], y[part], p[part])
        if k != 17:
            got = decoder.decode(_packet(data, width=1280, height=720))
            np.testing.assert_array_equal(got.t, t_us[part] * 1000)


# -- libcaer and mono ----------------------------------------------------------------------
def test_libcaer_and_mono_packets_decode_with_their_time_rules():
    x, y, p = np.array([3, 345, 0]), np.array([7, 259, 0]), np.array([1, 0, 1])
    us = np.array([2**31 - 2, 2**31 - 1, 5])  # the 31-bit counter wraps before the third
    data = ((x << 17) | (y << 2) | (p << 1) | 1).astype("<u4")
    raw = np.stack([data, us.astype("<u4")], axis=1).astype("<u4").tobytes()
    ev = EventDecoder().decode(_packet(raw, "libcaer", 346, 260, time_base=10**18))
    np.testing.assert_array_equal(ev.t, 10**18 + np.array([2**31 - 2, 2**31 - 1, 2**31 + 5])
                                  * 1000)
    assert ev.x.tolist() == x.tolist() and ev.y.tolist() == y.tolist() and ev.p.tolist() == [1, 0, 1]
    ns = np.array([0, 999, 2**32 - 1], dtype=np.uint64)
    words = ns | (x.astype(np.uint64) << 32) | (y.astype(np.uint64) << 48) \
        | (p.astype(np.uint64) << 63)
    ev = EventDecoder().decode(_packet(words.astype("<u8").tobytes(), "mono", 346, 260,
                                       time_base=5))
    assert ev.t.tolist() == [5, 1004, 2**32 + 4] and ev.p.tolist() == [1, 0, 1]


# -- bad packets -------------------------------------------------------------------------
@pytest.mark.parametrize("change, reason", [
    (dict(encoding="evt4"), "unknown_encoding"),
    (dict(big=True), "unknown_encoding"),
    (dict(width=0), "bad_size"),
    (dict(events=b"\x01\x80\x02"), "data_length"),  # 3 bytes: not whole words
    (dict(events=np.array([_word(0x9, 1), _word(8, 1)], "<u2").tobytes()), "bad_event_data"),
])
def test_bad_packets_are_rejected_and_leave_the_stream_decodable(change, reason):
    """A bad packet inserted in a stream raises InvalidMessage with its reason, and the
    stream around it decodes exactly as without it (its state was not touched)."""
    rng = np.random.default_rng(3)
    chunks = _split(_random_evt3_stream(rng), rng, parts=4)
    clean = _decode_all(EventDecoder(backend="numpy"), chunks)
    decoder = EventDecoder(backend="numpy")
    got = [decoder.decode(_packet(c.tobytes())) for c in chunks[:2]]
    bad = dict(events=chunks[2].tobytes()) | change
    with pytest.raises(conv.InvalidMessage) as err:
        decoder.decode(_packet(**bad))
    assert err.value.reason == reason
    got += [decoder.decode(_packet(c.tobytes())) for c in chunks[2:]]
    after = ep.CdEvents(*(np.concatenate([getattr(e, f) for e in got]) for f in ep.CdEvents._fields))
    for name in ep.CdEvents._fields:
        np.testing.assert_array_equal(getattr(after, name), getattr(clean, name), err_msg=name)


@pytest.mark.parametrize("backend", ["numpy", pytest.param("evt3", marks=needs_evt3)])
def test_a_packet_with_events_outside_the_sensor_is_rejected_but_its_clock_is_kept(backend):
    """An event beyond the sensor leaves the packet out (out_of_image); its time words are
    real, so the next packets decode as if it had been lost in transit."""
    rng = np.random.default_rng(4)
    chunks = _split(_random_evt3_stream(rng), rng, parts=4)
    reference = EventDecoder(backend=backend)
    pieces = [reference.decode(_packet(c.tobytes())) for c in chunks]
    decoder = EventDecoder(backend=backend)
    got = [decoder.decode(_packet(c.tobytes())) for c in chunks[:2]]
    outside = np.concatenate((chunks[2], [_word(ep.EVT3_ADDR_X, 700)])).astype("<u2")
    with pytest.raises(conv.InvalidMessage) as err:
        decoder.decode(_packet(outside.tobytes()))
    assert err.value.reason == "out_of_image"
    got.append(decoder.decode(_packet(chunks[3].tobytes())))
    for mine, ref in zip(got, pieces[:2] + pieces[3:]):
        for name in ep.CdEvents._fields:
            np.testing.assert_array_equal(getattr(mine, name), getattr(ref, name))


# -- the camera clock on ROS time -------------------------------------------------------------
def test_sensor_clock_takes_the_least_delayed_packet_and_restarts_on_a_jump():
    rng = np.random.default_rng(0)
    true_offset = 1_700_000_000 * 10**9 - 5 * 10**9
    clock = SensorClock(window=5.0, jump=0.5, confirm=3)
    for k in range(300):  # 3 s of packets every 10 ms, delayed 0.2..20 ms
        first = 5 * 10**9 + k * 10**7
        delay = int(rng.uniform(0.2e6, 20e6))
        got = clock.offset(first + true_offset + delay, first)
        assert 0 <= got - true_offset <= 20e6
    assert got - true_offset < 1e6  # the least delayed sample wins
    # one packet held up by 0.8 s is refused, not a restart
    with pytest.raises(conv.InvalidMessage) as err:
        clock.offset(8 * 10**9 + true_offset + 8 * 10**8, 8 * 10**9)
    assert err.value.reason == "bad_event_time" and clock.resets == 0
    # the camera restarts (its clock starts again at 0): three packets confirm it
    new_offset = true_offset + 8 * 10**9
    for k in range(2):
        with pytest.raises(conv.InvalidMessage):
            clock.offset(k * 10**7 + new_offset, k * 10**7)
    assert clock.offset(2 * 10**7 + new_offset, 2 * 10**7) == new_offset
    assert clock.resets == 1


def test_event_packet_stream_maps_times_counts_gaps_and_checks_absolute_times():
    stream, notes = EventPacketStream(backend="numpy"), Counter()
    stamp = 1_700_000_000 * 10**9
    for seq, first_us in ((10, 1_000_000), (11, 1_010_000), (14, 1_040_000)):
        data = encode_evt3(np.array([first_us, first_us + 5]), np.array([1, 2]),
                           np.array([3, 4]), np.array([1, 0]))
        ev = stream(_packet(data, seq=seq, stamp_ns=stamp + (first_us - 1_000_000) * 1000),
                    (480, 640), notes)
        assert ev.t.dtype == np.float64
        assert ev.t[0] == pytest.approx((stamp + (first_us - 1_000_000) * 1000) * 1e-9)
    assert notes["lost_packets"] == 2
    with pytest.raises(conv.InvalidMessage) as err:  # another sensor size than the camera's
        stream(_packet(data, seq=15, width=1280, height=720), (480, 640), notes)
    assert err.value.reason == "bad_size"
    stream(_packet(b"", seq=0), (480, 640), notes)  # a driver restarted: seq back to 0
    assert notes["stream_restarts"] == 1
    # libcaer times are host time already: far from the header stamp they are refused
    raw = np.array([[(5 << 17) | (6 << 2), 10]], "<u4").tobytes()
    ev = stream(_packet(raw, "libcaer", 346, 260, time_base=stamp, seq=1, stamp_ns=stamp))
    assert ev.t[0] == pytest.approx((stamp + 10_000) * 1e-9)
    with pytest.raises(conv.InvalidMessage) as err:
        stream(_packet(raw, "libcaer", 346, 260, time_base=stamp, seq=2,
                       stamp_ns=stamp + 60 * 10**9))
    assert err.value.reason == "bad_event_time"


def test_the_bags_event_packet_definition_has_the_released_hash():
    assert bags.typestore().hash_rihs01(bags.EVENT_PACKET) == bags.EVENT_PACKET_HASH
    msg_file = Path(__file__).resolve().parents[2] / "interfaces" / "event_camera_msgs" / "msg"
    fields = [line.split("#")[0].split() for line in
              (msg_file / "EventPacket.msg").read_text().splitlines()]
    assert [f for f in fields if f] == [line.split() for line in
                                        bags.EVENT_PACKET_DEFINITION.splitlines()]


def test_decoder_state_copies_are_independent():
    """decode_evt3_words never changes the state it is given (the decoder commits the new
    one only once a packet decoded)."""
    state = ep.Evt3State(valid=True, high=5, wraps=1, low=7, y=3, base_x=10, polarity=1)
    before = dataclasses.replace(state)
    words = _random_evt3_stream(np.random.default_rng(1), 20)
    ep.decode_evt3_words(words, words >> 12, state)
    assert state == before


# -- a real Prophesee recording through the node's session ---------------------------------
def test_session_segments_a_real_prophesee_recording_with_its_events(evt3_packets, checkpoint):
    """The evt3 recording with a camera (640 x 480, the events in its pixels) stamped inside
    it: frames use the events, and each frame's event input is the one rendered offline from
    the same packets decoded by a fresh stream."""
    from anyseg_core.sensors.frame import Events
    from anyseg_ros.session import Session

    K = [500.0, 0.0, 319.5, 0.0, 500.0, 239.5, 0.0, 0.0, 1.0]
    session = Session({"checkpoint": str(checkpoint), "device": "cpu", "network.height": 64,
                       "network.width": 96, "modalities": ["camera", "events"],
                       "events.type": "packet", "events.decoder": "numpy", "camera.K": K,
                       "sync.stale_after": 3600.0}, warmup=False)
    stamps = [conv.stamp_to_sec(p.header.stamp) for p in evt3_packets]
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    # the camera first (as the live tests do: the first sensor heard pivots alone), then
    # three images inside the recording
    camera_at = [stamps[0] - 0.001, stamps[150] + 0.0005, stamps[300] + 0.0005,
                 stamps[450] + 0.0005]
    messages = sorted([(s, "events", p) for s, p in zip(stamps, evt3_packets)]
                      + [(s, "camera", conv.array_to_image(image, "rgb8", s, "camera",
                                                           cls=SimpleNamespace))
                         for s in camera_at], key=lambda m: m[0])
    results = []
    for now, sensor, msg in messages:
        assert session.receive(sensor, msg, now=now), session.counts()
        frame, _ = session.poll(now)
        if frame is not None:
            results.append((frame, session.segment(frame)))
    frame, _ = session.poll(messages[-1][0] + 1.0)
    if frame is not None:
        results.append((frame, session.segment(frame)))
    with_events = [(f, r) for f, r in results if r is not None and "events" in r.modalities]
    assert len(with_events) == 3, [(f.stamp, r and r.modalities) for f, r in results]
    counts = session.counts()["inputs"]["events"]
    assert counts["rejected"] == {} and counts["accepted"] == len(evt3_packets)
    assert counts["notes"].get("lost_packets", 0) == 0  # the recording's seq has no gap
    # offline: the same packets, decoded by a fresh stream from the start
    fresh, decoded = EventPacketStream(backend="numpy"), {}
    for p in evt3_packets:  # by the packet's last event: what the synchroniser matches on
        events = fresh(p, (480, 640))
        if len(events):
            decoded[float(events.t.max())] = events
    for frame, r in with_events:
        raw, _ = session.pipeline.raw_frame(frame, session.geometry)
        used = [decoded[item.stamp] for item in frame.items["events"]]
        offline = Events(*(np.concatenate([getattr(e, f) for e in used]) for f in "xytp"))
        assert len(offline) > 100  # events of the window's packets
        mine = session.runtime.prepare(raw)["events"]
        theirs = session.runtime.prepare(dataclasses.replace(raw, events=offline))["events"]
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
        assert mine.abs().sum() > 0
