"""render_events: counts, the time window, recency, warping, dtypes and chunking."""
import numpy as np
import pytest
import torch

import anyseg_core.sensors.events as events_module
from anyseg_core.sensors import render_events

HW = (4, 6)


def ev(*rows):
    """Events from (x, y, t, p) rows as numpy arrays with the ROS/MUSES dtypes."""
    x, y, t, p = zip(*rows)
    return (np.array(x, np.uint16), np.array(y, np.uint16), np.array(t, np.float64),
            np.array(p, np.uint8))


def test_counts_per_polarity_on_exact_pixels():
    img = render_events(*ev((1, 2, 0.9, 1), (1, 2, 0.95, 1), (1, 2, 0.97, 0), (5, 3, 1.0, 0)),
                        HW, t_end=1.0, window=0.25)
    assert img.shape == (3, 4, 6) and img.dtype == torch.float32
    assert img[0, 2, 1] == 2 and img[1, 2, 1] == 1
    assert img[1, 3, 5] == 1 and img[0, 3, 5] == 0
    assert img[:2].sum() == 4


@pytest.mark.parametrize("base", [0.0, 1.7e9])
def test_window_is_open_at_the_start_and_closed_at_the_end(base):
    t_end, window = base + 1.0, 0.25  # binary fractions: every time below is exact in float64
    rows = [(0, 0, t_end - window, 1),          # exactly at the start: excluded
            (1, 0, t_end - window + 2**-20, 1),  # 1 us later: included
            (2, 0, t_end, 1),                    # at the end: included
            (3, 0, t_end + 2**-20, 1)]           # after the end: excluded
    img = render_events(*ev(*rows), HW, t_end=t_end, window=window)
    assert img[0, 0].tolist() == [0, 1, 1, 0, 0, 0]


def test_t_end_defaults_to_the_latest_event():
    rows = [(0, 0, 5.0, 1), (1, 0, 5.2, 1), (2, 0, 5.3, 0)]
    default = render_events(*ev(*rows), HW, window=0.25)
    assert torch.equal(default, render_events(*ev(*rows), HW, t_end=5.3, window=0.25))
    assert default[:2, 0].sum(0).tolist() == [0, 1, 1, 0, 0, 0]


def test_recency_is_the_latest_event_position_in_the_window():
    rows = [(0, 0, 0.875, 1), (0, 0, 0.8, 0),  # latest at 0.875: (0.875 - 0.75) / 0.25
            (1, 1, 1.0, 0),                     # at t_end: 1
            (2, 2, 0.7, 1)]                     # outside the window: nothing at all
    img = render_events(*ev(*rows), HW, t_end=1.0, window=0.25)
    assert img[2, 0, 0] == 0.5 and img[2, 1, 1] == 1.0
    assert img[:, 2, 2].tolist() == [0, 0, 0]
    assert ((img[2] > 0) == (img[:2].sum(0) > 0)).all()
    zero = render_events(*ev(*rows), HW, t_end=1.0, window=0.25, third="zero")
    assert not zero[2].any() and torch.equal(zero[:2], img[:2])


def test_many_events_on_one_pixel_do_not_wrap():
    n = 300
    img = render_events(np.full(n, 3, np.uint16), np.full(n, 1, np.uint16),
                        np.linspace(0.0, 0.02, n), np.ones(n, np.uint8), HW)
    assert img[0, 1, 3] == 300


def test_translation_warp_shifts_and_drops():
    warp = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    rows = [(0, 0, 1.0, 1), (3, 2, 1.0, 0), (4, 0, 1.0, 1), (0, 3, 1.0, 1)]
    img = render_events(*ev(*rows), HW, t_end=1.0, warp=warp)
    # (0,0)->(2,1) kept, (3,2)->(5,3) kept, (4,0)->(6,1) and (0,3)->(2,4) fall outside
    assert img[0, 1, 2] == 1 and img[1, 3, 5] == 1
    assert img[:2].sum() == 2


def test_warp_rounds_to_the_nearest_pixel():
    shift = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, -0.49], [0.0, 0.0, 1.0]])
    img = render_events(*ev((1, 1, 1.0, 1)), HW, warp=shift)
    assert img[0, 1, 2] == 1  # x: 1.5 rounds up to 2; y: 0.51 rounds to 1
    behind = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])
    assert not render_events(*ev((1, 1, 1.0, 1)), HW, warp=behind).any()


def test_coordinate_and_polarity_dtypes():
    ref = render_events(*ev((1, 2, 0.9, 1), (5, 3, 1.0, 0)), HW, t_end=1.0)
    xs = [1, 5, -1, 6]
    ys = [2, 3, 0, 0]  # the last two events are outside the image
    t = [0.9, 1.0, 1.0, 1.0]
    for x_dtype in (np.int16, np.int32, np.int64, np.float32, np.float64):
        got = render_events(np.array(xs, x_dtype), np.array(ys, x_dtype), np.array(t),
                            np.array([1, 0, 1, 1]), HW, t_end=1.0)
        assert torch.equal(got, ref), x_dtype
    signed = render_events(torch.tensor(xs), torch.tensor(ys), torch.tensor(t),
                           torch.tensor([1, -1, 1, 1], dtype=torch.int8), HW, t_end=1.0)
    boolean = render_events(*ev((1, 2, 0.9, 1), (5, 3, 1.0, 0))[:3],
                            np.array([True, False]), HW, t_end=1.0)
    assert torch.equal(signed, ref) and torch.equal(boolean, ref)
    rounded = render_events(np.array([0.6, 4.49]), np.array([1.5, 2.51]), np.array([1.0, 1.0]),
                            np.array([1, 1]), HW)
    assert rounded[0].nonzero().tolist() == [[2, 1], [3, 4]]


def test_chunking_does_not_change_the_result(monkeypatch):
    rng = np.random.default_rng(3)
    n = 5000
    x, y = rng.integers(-1, 8, n), rng.integers(-1, 6, n)
    t, p = 100.0 + np.sort(rng.uniform(0, 0.05, n)), rng.integers(0, 2, n)
    warp = np.array([[1.01, 0.02, -0.3], [-0.01, 0.99, 0.2], [0.001, 0.0, 1.0]])
    whole = [render_events(x, y, t, p, HW, warp=w) for w in (None, warp)]
    monkeypatch.setattr(events_module, "_CPU_CHUNK", 333)
    chunked = [render_events(x, y, t, p, HW, warp=w) for w in (None, warp)]
    assert all(torch.equal(a, b) for a, b in zip(whole, chunked))
    assert whole[0].any() and whole[1].any()


def test_empty_and_bad_input():
    empty = np.zeros(0)
    assert not render_events(empty, empty, empty, empty, HW).any()
    with pytest.raises(ValueError, match="third"):
        render_events(*ev((0, 0, 1.0, 1)), HW, third="polarity")
    with pytest.raises(ValueError, match="one entry per event"):
        render_events(np.zeros(2), np.zeros(3), np.zeros(3), np.zeros(3), HW)
    with pytest.raises(ValueError, match="3x3"):
        render_events(*ev((0, 0, 1.0, 1)), HW, warp=np.eye(4))
