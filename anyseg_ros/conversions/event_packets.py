"""``event_camera_msgs/EventPacket`` -> events: the encodings event-camera drivers publish.

A packet holds ``events`` (bytes in the camera's own ``encoding``), the sensor size, a packet
counter ``seq`` and ``time_base``. An event's time in nanoseconds is ``time_base`` + its
decoded time, as event_camera_codecs defines it:

======================  ==================  ===========================================  ====
encoding                published by        decoded time                                 word
======================  ==================  ===========================================  ====
``evt3`` (EVT 3.0)      metavision_driver   the camera's own microsecond clock x 1000;   2 B
                        (Prophesee)         ``time_base`` 0. Stateful across packets
                                            (TIME_HIGH / TIME_LOW, the 24-bit counter
                                            wraps every 16.77 s and is unwrapped here)
``libcaer_cmp``         libcaer_driver      microseconds since ``time_base`` x 1000      2 B
                        (iniVation)         (``time_base``: host epoch ns)
``libcaer``             libcaer_driver      microseconds since ``time_base`` x 1000,     8 B
                                            31-bit, wrapping inside a packet
``mono`` (legacy)       older drivers       nanoseconds since ``time_base``              8 B
======================  ==================  ===========================================  ====

:class:`EventDecoder` (one per topic) decodes them into :class:`CdEvents` (``t`` int64 ns,
``x``/``y`` uint16, ``p`` uint8 with 1 = ON). Trigger words (evt3 EXT_TRIGGER) are skipped and
counted; evt3's system words (OTHERS, CONTINUED) are skipped. EVT 3.0 is decoded by the
``evt3`` package (Rust) where it is installed, else by the vectorised numpy decoder here; the
other encodings always by numpy. A packet that cannot be decoded raises
:class:`~anyseg_ros.conversions.common.InvalidMessage` with a reason and leaves the
decoder's state as it was (a structural fault: unknown encoding, a length that is not whole
words, zero sensor size, a word of no known kind); a packet whose words decode but put events
outside the sensor is rejected after its time words have been taken (the clock they carry is
real), so the next packet decodes as if the bad one had been dropped in transit.

The upstream C++ libcaer_cmp decoder computes ``(dt + time_base) * 1000``, which overflows;
here it is ``time_base + dt * 1000``, which is what the format means.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Any, NamedTuple, Optional

import numpy as np

from .common import InvalidMessage, byte_view

#: Encodings :class:`EventDecoder` reads (``trigger``-only packets are not CD events).
ENCODINGS = ("evt3", "libcaer_cmp", "libcaer", "mono")
#: Bytes per word of each encoding: a packet must hold whole words.
WORD_BYTES = {"evt3": 2, "libcaer_cmp": 2, "libcaer": 8, "mono": 8}
#: Decoders of EVT 3.0: "auto" takes the ``evt3`` package where it imports, else numpy.
BACKENDS = ("auto", "evt3", "numpy")

# EVT 3.0 word kinds (the top 4 bits of each little-endian 16-bit word).
EVT3_ADDR_Y, EVT3_ADDR_X, EVT3_VECT_BASE_X, EVT3_VECT_12, EVT3_VECT_8 = 0x0, 0x2, 0x3, 0x4, 0x5
EVT3_TIME_LOW, EVT3_CONTINUED_4, EVT3_TIME_HIGH, EVT3_EXT_TRIGGER = 0x6, 0x7, 0x8, 0xA
EVT3_OTHERS, EVT3_CONTINUED_12 = 0xE, 0xF
_EVT3_KNOWN = np.zeros(16, dtype=bool)
_EVT3_KNOWN[[0x0, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x8, 0xA, 0xE, 0xF]] = True
#: A TIME_HIGH smaller than the last by at most this many steps (of 4096 us) is jitter, not
#: the 24-bit counter wrapping (as Prophesee's and event_camera_codecs' decoders treat it).
EVT3_HIGH_JITTER = 10
EVT3_WRAP_US = 1 << 24

# libcaer_cmp word kinds.
CMP_TIME_HIGH, CMP_TIME_LOW, CMP_ADDR_X, CMP_ADDR_Y, CMP_VECT_BASE_Y, CMP_VECT_8 = range(6)
_CMP_KNOWN = np.zeros(16, dtype=bool)
_CMP_KNOWN[:6] = True  # VECT_12 (6) is declared by the format but never written


class CdEvents(NamedTuple):
    """Change-detection events: ``t`` int64 ns (``time_base`` + decoded time), ``x``, ``y``
    uint16 pixels, ``p`` uint8 (1 = ON, 0 = OFF)."""

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    p: np.ndarray

    @staticmethod
    def empty() -> "CdEvents":
        return CdEvents(np.zeros(0, np.int64), np.zeros(0, np.uint16), np.zeros(0, np.uint16),
                        np.zeros(0, np.uint8))

    @property
    def count(self) -> int:
        return int(self.t.shape[0])


@dataclasses.dataclass
class Evt3State:
    """What an EVT 3.0 stream carries from one packet to the next."""

    valid: bool = False   # a TIME_HIGH then a TIME_LOW have been seen
    high: int = 0         # the last TIME_HIGH, 12 bits
    wraps: int = 0        # how many times the 24-bit microsecond counter wrapped
    low: int = 0          # the last TIME_LOW, 12 bits
    y: int = 0            # the last ADDR_Y
    base_x: int = 0       # the vector base (VECT_BASE_X, advanced by each vector word)
    polarity: int = 0     # the vector polarity


@dataclasses.dataclass
class CmpState:
    """What a libcaer_cmp stream carries from one packet to the next (its time restarts at
    each packet's time_base)."""

    x: int = 0
    base_y: int = 0
    polarity: int = 0


class Triggers(NamedTuple):
    """External trigger edges of an EVT 3.0 packet: ``t`` int64 ns, ``edge`` as the camera
    reports it (1 rising, 0 falling), ``channel`` the trigger input's id."""

    t: np.ndarray
    edge: np.ndarray
    channel: np.ndarray


def _forward_fill(mask: np.ndarray, values: np.ndarray, initial: int) -> np.ndarray:
    """For every word, the value of the last word at or before it where ``mask`` holds
    (``values``: one entry per such word, in order); ``initial`` before the first."""
    return np.concatenate(([initial], values)).astype(np.int64)[np.cumsum(mask)]


def _vector_events(words: np.ndarray, is_vect: np.ndarray, is_base: np.ndarray,
                   bits_of: np.ndarray, base_mask: int, base0: int, pol0: int,
                   pol_bit: int = 11):
    """Events of the vector words (VECT_12 / VECT_8 after a VECT_BASE): per vector word its
    base coordinate (the last base, advanced by the bits of every vector word since) and
    polarity; returns (word index, coordinate, polarity) per set bit, the base and polarity
    after the packet."""
    n = words.size
    step = np.where(is_vect, bits_of, 0).astype(np.int64)
    advanced = np.cumsum(step) - step  # bits of vector words strictly before each word
    base_at = _forward_fill(is_base, (words[is_base] & base_mask).astype(np.int64), base0)
    pol_at = _forward_fill(is_base, ((words[is_base] >> pol_bit) & 1).astype(np.int64), pol0)
    # bits advanced since the last base word (a base word itself is no vector: step 0)
    advanced_at_base = _forward_fill(is_base, advanced[is_base], 0)
    start = base_at + advanced - advanced_at_base
    end_base = int(start[-1] + step[-1]) if n else base0
    end_pol = int(pol_at[-1]) if n else pol0
    vect_idx = np.flatnonzero(is_vect)
    if not vect_idx.size:
        return (np.zeros(0, np.int64),) * 3 + (end_base, end_pol)
    width = int(bits_of[vect_idx].max())
    valid = words[vect_idx].astype(np.int64) & ((1 << width) - 1)
    bits = (valid[:, None] >> np.arange(width)) & 1
    bits &= (np.arange(width)[None, :] < bits_of[vect_idx][:, None])
    row, col = np.nonzero(bits)
    return (vect_idx[row], start[vect_idx][row] + col, pol_at[vect_idx][row],
            end_base, end_pol)


class EventDecoder:
    """Decodes the ``event_camera_msgs/EventPacket`` stream of one topic (stateful: EVT 3.0
    carries its clock and addresses from packet to packet; libcaer_cmp its addresses).

    ``backend``: who decodes EVT 3.0 (:data:`BACKENDS`); the other encodings are numpy's.
    ``keep_triggers``: keep the EVT 3.0 trigger edges of the last packet in
    :attr:`last_triggers` (numpy backend; counted either way in :attr:`triggers`).

    :meth:`decode` takes an EventPacket or anything with its fields (``encoding``, ``width``,
    ``height``, ``time_base``, ``is_bigendian``, ``events``). Thread-safe (one lock).
    """

    def __init__(self, backend: str = "auto", keep_triggers: bool = False) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self._evt3_module = None
        if backend in ("auto", "evt3"):
            try:
                import evt3
            except ImportError as e:
                if backend == "evt3":
                    raise ImportError(f"EventDecoder(backend='evt3') needs the evt3 package "
                                      f"(pip install evt3): {e}") from None
            else:
                self._evt3_module = evt3
        self.backend = "evt3" if self._evt3_module is not None else "numpy"
        self.keep_triggers = keep_triggers
        self.triggers = 0          # trigger edges skipped so far
        self.last_triggers: Optional[Triggers] = None
        self._lock = threading.Lock()
        self._encoding: Optional[str] = None
        self._geometry: Optional[tuple[int, int]] = None
        self._evt3 = Evt3State()
        self._evt3_native = None  # the evt3 package's stateful decoder
        self._cmp = CmpState()

    def reset(self) -> None:
        """Forget the stream's state (a camera restart: the next packet starts afresh)."""
        with self._lock:
            self._evt3, self._cmp, self._evt3_native = Evt3State(), CmpState(), None
            self._encoding = self._geometry = None

    def decode(self, packet: Any) -> CdEvents:
        encoding = str(packet.encoding)
        if encoding not in ENCODINGS:
            raise InvalidMessage("unknown_encoding", f"event encoding {encoding!r} is not one "
                                 f"of {ENCODINGS}")
        if bool(getattr(packet, "is_bigendian", False)):
            raise InvalidMessage("unknown_encoding", f"a big-endian {encoding} packet: every "
                                 "driver writes these encodings little-endian")
        width, height = int(packet.width), int(packet.height)
        if width <= 0 or height <= 0 or width > 65535 or height > 65535:
            raise InvalidMessage("bad_size", f"sensor size {width} x {height}")
        data = byte_view(packet.events)
        if data.size % WORD_BYTES[encoding]:
            raise InvalidMessage("data_length", f"{data.size} bytes of {encoding} are not whole "
                                 f"{WORD_BYTES[encoding]}-byte words (a truncated packet?)")
        time_base = int(packet.time_base)
        with self._lock:
            stream = (encoding, (height, width))
            if stream != (self._encoding, self._geometry):  # a new camera (or the first)
                evt3_state, cmp_state, native = Evt3State(), CmpState(), None
            else:
                evt3_state, cmp_state, native = self._evt3, self._cmp, self._evt3_native
            if encoding == "evt3":
                events, evt3_state, native = self._decode_evt3(data.view("<u2"), evt3_state,
                                                               native, width, height)
            elif encoding == "libcaer_cmp":
                events, cmp_state = _decode_cmp(data.view("<u2"), cmp_state)
            elif encoding == "libcaer":
                events = _decode_libcaer(data.view("<u4").reshape(-1, 2))
            else:
                events = _decode_mono(data.view("<u8"))
            # Decoded: the stream's state moves on (also for a packet rejected below, whose
            # time words are real); a packet refused above leaves it as it was.
            self._evt3, self._cmp, self._evt3_native = evt3_state, cmp_state, native
            self._encoding, self._geometry = stream
        if time_base:
            events = events._replace(t=events.t + np.int64(time_base))
        _check_inside(events, width, height, encoding)
        return events

    # -- EVT 3.0 -------------------------------------------------------------------------
    def _decode_evt3(self, words: np.ndarray, state: Evt3State, native, width: int,
                     height: int):
        codes = _word_kinds(words, _EVT3_KNOWN, "EVT 3.0")
        if self.backend == "evt3" and not self.keep_triggers:
            return self._decode_evt3_native(words, codes, state, native, width, height)
        events, triggers, state = decode_evt3_words(words, codes, state)
        self.triggers += int(triggers.t.size)
        self.last_triggers = triggers if self.keep_triggers else None
        return events, state, native

    def _decode_evt3_native(self, words, codes, state, native, width, height):
        """The evt3 package's stateful decoder; ``state`` only tracks whether the clock is
        known yet, so that triggers are counted from where the package decodes."""
        if native is None:
            native = self._evt3_module._Decoder(sensor_width=width, sensor_height=height)
        is_trigger = codes == EVT3_EXT_TRIGGER
        if not state.valid:
            start = evt3_first_valid(codes)
            state = dataclasses.replace(state, valid=start is not None)
            is_trigger = is_trigger[start:] if start is not None else is_trigger[:0]
        self.triggers += int(np.count_nonzero(is_trigger))
        out = native.feed(words.tobytes())
        return CdEvents(np.asarray(out.t).astype(np.int64) * 1000,
                        np.asarray(out.x, np.uint16), np.asarray(out.y, np.uint16),
                        np.asarray(out.p, np.uint8)), state, native


def _word_kinds(words: np.ndarray, known: np.ndarray, encoding: str) -> np.ndarray:
    """The kind (top 4 bits) of each 16-bit word; bad_event_data when any is of no kind the
    encoding has (a garbled packet: refused before the stream's state moves)."""
    codes = words >> 12
    unknown = ~known[codes]
    if unknown.any():
        bad = sorted({int(c) for c in codes[unknown][:64]})
        raise InvalidMessage("bad_event_data", f"{int(unknown.sum())} {encoding} words of no "
                             f"known kind (codes {bad})")
    return codes


def _decode_cmp(words: np.ndarray, state: CmpState) -> tuple[CdEvents, CmpState]:
    return decode_cmp_words(words, _word_kinds(words, _CMP_KNOWN, "libcaer_cmp"), state)


def evt3_first_valid(codes: np.ndarray) -> Optional[int]:
    """Index of the first word after a TIME_HIGH followed by a TIME_LOW (the stream's clock
    is known from there); None when the packet has no such pair."""
    high = np.flatnonzero(codes == EVT3_TIME_HIGH)
    if not high.size:
        return None
    low = np.flatnonzero(codes[high[0]:] == EVT3_TIME_LOW)
    return int(high[0] + low[0] + 1) if low.size else None


def decode_evt3_words(words: np.ndarray, codes: np.ndarray, state: Evt3State
                      ) -> tuple[CdEvents, Triggers, Evt3State]:
    """EVT 3.0 words -> CD events (time: the camera's clock, ns), trigger edges and the state
    after them; ``state`` itself is not changed. Vectorised: each word's time, row and vector
    base are the last ones set at or before it (forward fills), never a Python loop."""
    n = words.size
    state = dataclasses.replace(state)
    start = 0
    if not state.valid:  # as Prophesee's decoders: nothing before the clock is known
        first = evt3_first_valid(codes)
        start = n if first is None else first
        state.valid = first is not None
    # TIME_HIGH words, in order, with the wrap of the 24-bit counter unwrapped.
    is_high = codes == EVT3_TIME_HIGH
    highs = (words[is_high] & 0xFFF).astype(np.int64)
    previous = np.concatenate(([state.high], highs[:-1]))
    wrapped = (highs < previous) & (previous - highs > EVT3_HIGH_JITTER)
    wraps = state.wraps + np.cumsum(wrapped)
    high_us = wraps * EVT3_WRAP_US + (highs << 12)
    is_low = codes == EVT3_TIME_LOW
    lows = (words[is_low] & 0xFFF).astype(np.int64)
    t_us = (_forward_fill(is_high, high_us, state.wraps * EVT3_WRAP_US + (state.high << 12))
            + _forward_fill(is_low, lows, state.low))
    # Address and vector words count from the first word with a known clock.
    after = np.arange(n) >= start
    is_y = (codes == EVT3_ADDR_Y) & after
    y_at = _forward_fill(is_y, (words[is_y] & 0x7FF).astype(np.int64), state.y)
    # Single events (ADDR_X) and vectors (VECT_12 / VECT_8 from VECT_BASE_X).
    single = np.flatnonzero((codes == EVT3_ADDR_X) & after)
    bits_of = np.where(codes == EVT3_VECT_12, 12, 8)
    is_vect = ((codes == EVT3_VECT_12) | (codes == EVT3_VECT_8)) & after
    v_idx, v_x, v_p, state.base_x, state.polarity = _vector_events(
        words, is_vect, (codes == EVT3_VECT_BASE_X) & after, bits_of, 0x7FF, state.base_x,
        state.polarity)
    idx, x, p = _in_word_order(single, (words[single] & 0x7FF).astype(np.int64),
                               ((words[single] >> 11) & 1).astype(np.int64), v_idx, v_x, v_p)
    events = CdEvents(t_us[idx] * 1000, x.astype(np.uint16), y_at[idx].astype(np.uint16),
                      p.astype(np.uint8))
    trig = np.flatnonzero(codes == EVT3_EXT_TRIGGER)
    trig = trig[trig >= start]
    triggers = Triggers(t_us[trig] * 1000, (words[trig] & 1).astype(np.uint8),
                        ((words[trig] >> 8) & 0xF).astype(np.uint8))
    # The state after the packet.
    if highs.size:
        state.high, state.wraps = int(highs[-1]), int(wraps[-1])
    if lows.size:
        state.low = int(lows[-1])
    if is_y.any():
        state.y = int(words[is_y][-1] & 0x7FF)
    return events, triggers, state


def _in_word_order(single, single_a, single_p, v_idx, v_a, v_p):
    """Single and vector events merged in the order of their words (a vector word's events
    in bit order: np.nonzero gives them so, and the sort is stable)."""
    idx = np.concatenate((single, v_idx))
    a = np.concatenate((single_a, v_a))
    p = np.concatenate((single_p, v_p))
    if v_idx.size and single.size:
        order = np.argsort(idx, kind="stable")
        idx, a, p = idx[order], a[order], p[order]
    return idx, a, p


def decode_cmp_words(words: np.ndarray, codes: np.ndarray, state: CmpState
                     ) -> tuple[CdEvents, CmpState]:
    """libcaer_cmp words -> CD events (time: microseconds since the packet's time_base, as
    ns) and the state after them; ``state`` itself is not changed. The time restarts at 0 in
    every packet (TIME_HIGH / TIME_LOW are relative to ``time_base``)."""
    state = dataclasses.replace(state)
    is_high, is_low = codes == CMP_TIME_HIGH, codes == CMP_TIME_LOW
    t_us = (_forward_fill(is_high, (words[is_high] & 0xFFF).astype(np.int64) << 12, 0)
            + _forward_fill(is_low, (words[is_low] & 0xFFF).astype(np.int64), 0))
    is_x = codes == CMP_ADDR_X
    x_at = _forward_fill(is_x, (words[is_x] & 0x7FF).astype(np.int64), state.x)
    single = np.flatnonzero(codes == CMP_ADDR_Y)
    is_vect = codes == CMP_VECT_8
    v_idx, v_y, v_p, state.base_y, state.polarity = _vector_events(
        words, is_vect, codes == CMP_VECT_BASE_Y, np.full(words.size, 8), 0x7FF,
        state.base_y, state.polarity)
    idx, y, p = _in_word_order(single, (words[single] & 0x7FF).astype(np.int64),
                               ((words[single] >> 11) & 1).astype(np.int64), v_idx, v_y, v_p)
    if is_x.any():
        state.x = int(words[is_x][-1] & 0x7FF)
    return CdEvents(t_us[idx] * 1000, x_at[idx].astype(np.uint16), y.astype(np.uint16),
                    p.astype(np.uint8)), state


def _decode_libcaer(pairs: np.ndarray) -> CdEvents:
    """libcaer polarity events: (uint32 data, int32 microseconds) per event; data bit 1 the
    polarity, bits 2..16 y, bits 17..31 x. The 31-bit microsecond counter may wrap once
    inside a packet (+2^31 us from there on)."""
    data, stamp = pairs[:, 0], pairs[:, 1].view("<i4").astype(np.int64)
    wrapped = np.concatenate(([0], np.cumsum(np.diff(stamp) < 0)))
    t = (stamp + wrapped * (1 << 31)) * 1000
    return CdEvents(t, ((data >> 17) & 0x7FFF).astype(np.uint16),
                    ((data >> 2) & 0x7FFF).astype(np.uint16), ((data >> 1) & 1).astype(np.uint8))


def _decode_mono(words: np.ndarray) -> CdEvents:
    """mono: one 64-bit word per event: bits 0..31 ns since time_base, 32..47 x, 48..62 y,
    63 the polarity."""
    return CdEvents((words & 0xFFFFFFFF).astype(np.int64),
                    ((words >> 32) & 0xFFFF).astype(np.uint16),
                    ((words >> 48) & 0x7FFF).astype(np.uint16), (words >> 63).astype(np.uint8))


def _check_inside(events: CdEvents, width: int, height: int, encoding: str) -> None:
    if not events.count:
        return
    outside = (events.x >= width) | (events.y >= height)
    if outside.any():
        n = int(np.count_nonzero(outside))
        raise InvalidMessage("out_of_image", f"{n} of {events.count} {encoding} events lie "
                             f"outside the {width} x {height} sensor (x up to "
                             f"{int(events.x.max())}, y up to {int(events.y.max())})")


# --------------------------------------------------------------------------- encoding
def encode_evt3(t_us: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray) -> bytes:
    """CD events (time-sorted, microseconds on the camera's clock) -> one packet of EVT 3.0
    words as a Prophesee camera streams them: a TIME_HIGH when the upper 12 bits of the
    24-bit time change, a TIME_LOW when the lower 12 change, an ADDR_Y when the row changes,
    then an ADDR_X per event. Every packet starts with its TIME_HIGH (a camera repeats it
    every 4096 us), so a packet lost on the way costs only its own events."""
    t_us = np.asarray(t_us, dtype=np.int64)
    if t_us.size and (np.diff(t_us) < 0).any():
        raise ValueError("encode_evt3 needs events sorted by time")
    x = np.asarray(x, np.int64)
    y = np.asarray(y, np.int64)
    p = np.asarray(p, np.int64)
    if t_us.size and (x.max() > 0x7FF or y.max() > 0x7FF or x.min() < 0 or y.min() < 0):
        raise ValueError("EVT 3.0 addresses are 11 bits (0..2047)")
    n = t_us.size
    high = (t_us >> 12) & 0xFFF
    low = t_us & 0xFFF
    new_high = high != np.concatenate(([-1], high[:-1]))
    new_low = (t_us != np.concatenate(([-1], t_us[:-1]))) | new_high
    new_y = (y != np.concatenate(([-1], y[:-1]))) | new_low
    # up to 4 words per event: TIME_HIGH, TIME_LOW, ADDR_Y, ADDR_X (in that order)
    words = np.stack((
        (EVT3_TIME_HIGH << 12) | high, (EVT3_TIME_LOW << 12) | low,
        (EVT3_ADDR_Y << 12) | y, (EVT3_ADDR_X << 12) | (p << 11) | x), axis=1)
    keep = np.stack((new_high, new_low, new_y, np.ones(n, bool)), axis=1)
    return words[keep].astype("<u2").tobytes()
