"""prepare_inputs / prepare_label on a small synthetic frame, the geometry helpers, CPU vs CUDA."""
import numpy as np
import pytest
import torch

from anyseg_core.sensors import (Events, RawFrame, normalize, prepare_inputs, prepare_label,
                                 project_lidar, render_events, rotation_homography,
                                 scale_intrinsics)

HW = (48, 64)
NET = (24, 32)
K = np.array([[50.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]])
K_EV = np.array([[40.0, 0.0, 19.5], [0.0, 40.0, 14.5], [0.0, 0.0, 1.0]])
# LiDAR axes (x forward, y left, z up) to the camera's optical axes, 10 cm apart.
T_CAM_LIDAR = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.1], [1.0, 0.0, 0.0, 0.0],
                        [0.0, 0.0, 0.0, 1.0]])
T_CAM_EVENTS = np.eye(4)
T_CAM = 100.0


def make_frame(**changes) -> RawFrame:
    rng = np.random.default_rng(0)
    n_pts, n_ev = 400, 2000
    lidar = np.stack([rng.uniform(2, 30, n_pts), rng.uniform(-10, 10, n_pts),
                      rng.uniform(-2, 2, n_pts), rng.random(n_pts)], axis=1)
    events = Events(x=rng.integers(0, 40, n_ev).astype(np.uint16),
                    y=rng.integers(0, 30, n_ev).astype(np.uint16),
                    t=T_CAM - rng.uniform(0.0, 0.05, n_ev),  # partly before the 30 ms window
                    p=rng.integers(0, 2, n_ev).astype(np.uint8))
    depth = rng.uniform(0.5, 40.0, HW).astype(np.float32)
    depth[rng.random(HW) < 0.2] = 0.0
    label = rng.choice(np.array([0, 1, 13, 255], np.uint8), HW)
    fields = dict(image_hw=HW, K=K, t_cam=T_CAM,
                  camera=rng.integers(0, 256, (*HW, 3), dtype=np.uint8),
                  lidar=lidar, T_cam_lidar=T_CAM_LIDAR, events=events, events_K=K_EV,
                  events_hw=(30, 40), T_cam_events=T_CAM_EVENTS, depth=depth, label=label)
    fields.update(changes)
    return RawFrame(**fields)


ALL = ("camera", "events", "lidar", "depth")


def test_keys_shapes_dtypes():
    out = prepare_inputs(make_frame(), NET, ALL)
    assert set(out) == set(ALL)
    for name, x in out.items():
        assert x.shape == (3, *NET) and x.dtype == torch.float32 and x.device.type == "cpu", name
        assert torch.isfinite(x).all()
    assert set(prepare_inputs(make_frame(), NET, ["lidar", "camera"])) == {"lidar", "camera"}


def test_missing_sensors_are_absent():
    out = prepare_inputs(make_frame(events=None, depth=None), NET, ALL)
    assert set(out) == {"camera", "lidar"}
    assert prepare_inputs(make_frame(camera=None, lidar=None, events=None, depth=None),
                          NET, ALL) == {}


def test_missing_calibration_is_named():
    with pytest.raises(ValueError, match="lidar"):
        prepare_inputs(make_frame(T_cam_lidar=None), NET, ["lidar"])
    with pytest.raises(ValueError, match="events"):
        prepare_inputs(make_frame(events_K=None), NET, ["events"])
    # not requested or not present: no error
    assert set(prepare_inputs(make_frame(T_cam_lidar=None), NET, ["camera"])) == {"camera"}
    assert "lidar" not in prepare_inputs(make_frame(T_cam_lidar=None, lidar=None), NET, ALL)
    with pytest.raises(ValueError, match="unknown modality"):
        prepare_inputs(make_frame(), NET, ["radar"])


def test_lidar_is_projected_at_network_size():
    frame = make_frame()
    raw = prepare_inputs(frame, NET, ["lidar"], normalized=False)["lidar"]
    ref = project_lidar(frame.lidar, scale_intrinsics(K, HW, NET), T_CAM_LIDAR, NET)
    assert torch.equal(raw, ref) and (raw[0] > 0).sum() > 50
    dilated = prepare_inputs(frame, NET, ["lidar"], normalized=False, lidar_dilate=2)["lidar"]
    assert (dilated[0] > 0).sum() > (raw[0] > 0).sum()
    assert torch.equal(prepare_inputs(frame, NET, ["lidar"])["lidar"], normalize(ref, "lidar"))


def test_events_are_warped_into_the_camera_at_network_size():
    frame = make_frame()
    raw = prepare_inputs(frame, NET, ["events"], normalized=False)["events"]
    warp = rotation_homography(K_EV, scale_intrinsics(K, HW, NET), np.eye(3))
    ev = frame.events
    ref = render_events(ev.x, ev.y, ev.t, ev.p, NET, t_end=T_CAM, window=0.03, warp=warp)
    assert torch.equal(raw, ref)
    in_window = ((ev.t > T_CAM - 0.03) & (ev.t <= T_CAM)).sum()
    assert 0 < raw[:2].sum() <= in_window
    zero = prepare_inputs(frame, NET, ["events"], normalized=False, event_third="zero")
    assert not zero["events"][2].any()


def test_event_window_without_camera_time_ends_at_the_last_event():
    frame = make_frame(t_cam=0.0)
    ev = frame.events
    raw = prepare_inputs(frame, NET, ["events"], normalized=False, event_window=0.01)["events"]
    in_window = (ev.t > ev.t.max() - 0.01).sum()
    assert raw[:2].sum() == in_window  # the identity-rotation warp keeps every event here


def test_event_pixels_follow_the_resize_convention():
    # Event camera == frame camera: an event at (x, y) must land where the resized camera
    # pixel is, u' = (u + 0.5) * s - 0.5 rounded.
    events = Events(x=np.array([10, 63]), y=np.array([7, 47]), t=np.array([T_CAM, T_CAM]),
                    p=np.array([1, 0]))
    frame = make_frame(events=events, events_K=K, events_hw=HW)
    raw = prepare_inputs(frame, NET, ["events"], normalized=False)["events"]
    assert raw[0, 3, 5] == 1 and raw[1, 23, 31] == 1  # 10 -> 4.75 -> 5, 7 -> 3.25 -> 3
    assert raw[:2].sum() == 2


def test_camera_and_depth_paths():
    frame = make_frame()
    bgr = make_frame(camera=frame.camera[:, :, ::-1].copy(), camera_encoding="bgr8")
    a = prepare_inputs(frame, NET, ["camera", "depth"], normalized=False)
    b = prepare_inputs(bgr, NET, ["camera"], normalized=False)
    assert torch.equal(a["camera"], b["camera"])
    assert 0 <= a["camera"].min() and a["camera"].max() <= 1
    mm = np.round(frame.depth * 1000).astype(np.uint16)
    c = prepare_inputs(make_frame(depth=mm, depth_encoding="16UC1"), NET, ["depth"],
                       normalized=False)
    d = prepare_inputs(make_frame(depth=mm.astype(np.float32) / 1000), NET, ["depth"],
                       normalized=False)
    assert torch.allclose(c["depth"], d["depth"], rtol=1e-6, atol=0)
    values = set(np.unique(frame.depth).tolist())
    assert set(a["depth"][0].unique().tolist()) <= values  # no blended depths


def test_torch_inputs_and_device_argument():
    frame = make_frame()
    ev = frame.events
    as_torch = make_frame(camera=torch.from_numpy(frame.camera),
                          lidar=torch.from_numpy(frame.lidar),
                          events=Events(*(torch.from_numpy(a) for a in (ev.x, ev.y, ev.t, ev.p))),
                          depth=torch.from_numpy(frame.depth), K=torch.from_numpy(K))
    a = prepare_inputs(frame, NET, ALL)
    b = prepare_inputs(as_torch, NET, ALL, device="cpu")
    assert all(torch.equal(a[m], b[m]) for m in ALL)


def test_prepare_label():
    label = make_frame().label
    out = prepare_label(label, NET)
    assert out.shape == NET and out.dtype == torch.int64
    assert set(out.unique().tolist()) <= {0, 1, 13, 255} and (out == 255).any()
    assert torch.equal(prepare_label(torch.from_numpy(label), HW), torch.from_numpy(label).long())


def test_scale_intrinsics_pixel_centre_convention():
    p = np.array([0.7, -0.3, 4.0])
    u, v, _ = K @ p / p[2]
    for dst in [(24, 32), (96, 128), (30, 50)]:
        u2, v2, _ = scale_intrinsics(K, HW, dst).numpy() @ p / p[2]
        assert u2 == pytest.approx((u + 0.5) * dst[1] / HW[1] - 0.5)
        assert v2 == pytest.approx((v + 0.5) * dst[0] / HW[0] - 0.5)
    K_t = scale_intrinsics(torch.from_numpy(K), HW, HW)
    assert K_t.dtype == torch.float64 and torch.allclose(K_t, torch.from_numpy(K))
    assert torch.allclose(rotation_homography(K, K, np.eye(3)), torch.eye(3, dtype=torch.float64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("case", ["lidar", "lidar_dilated", "events", "events_warped"])
def test_cuda_matches_cpu_exactly(case):
    frame = make_frame()
    rng = np.random.default_rng(5)
    pts = np.concatenate([rng.uniform(-20, 20, (50_000, 3)), rng.random((50_000, 1))], axis=1)
    pts[::7, :3] = np.round(pts[::7, :3])  # exact ties in depth
    n = 200_000
    ev = (rng.integers(0, 40, n), rng.integers(0, 30, n), T_CAM - rng.uniform(0, 0.04, n),
          rng.integers(0, 2, n))
    warp = rotation_homography(K_EV, K, np.array([[0.999, -0.02, 0.03], [0.02, 0.999, 0.0],
                                                  [-0.03, 0.0, 0.999]]))

    def run(device: str) -> torch.Tensor:
        if case.startswith("lidar"):
            return project_lidar(torch.from_numpy(pts).to(device), K, frame.T_cam_lidar, HW,
                                 dilate=3 if case == "lidar_dilated" else 0)
        return render_events(*(torch.from_numpy(a).to(device) for a in ev), HW,
                             warp=warp if case == "events_warped" else None)

    cpu, cuda = run("cpu"), run("cuda")
    assert cuda.device.type == "cuda" and cpu.any()
    assert torch.equal(cpu, cuda.cpu())


def test_rendered_event_image_stands_in_for_the_event_stream():
    """An event frame rendered upstream (events.type: image in the node) gives the same
    network input as the stream rendered here at that size, and is resized to any other."""
    frame = make_frame(T_cam_events=None, events_K=K)
    # Events in camera pixels, so the upstream render and ours see the same geometry.
    ev = frame.events
    frame.events = Events(x=(ev.x * 1.5).astype(np.uint16), y=(ev.y * 1.5).astype(np.uint16),
                          t=ev.t, p=ev.p)
    upstream = render_events(frame.events.x, frame.events.y, frame.events.t, frame.events.p, HW,
                             t_end=T_CAM, window=0.03).permute(1, 2, 0).numpy()
    image_frame = make_frame(events=None, events_image=upstream)
    same = prepare_inputs(image_frame, HW, ["events"])["events"]
    assert torch.equal(same, prepare_inputs(frame, HW, ["events"])["events"])
    small = prepare_inputs(image_frame, NET, ["events"], normalized=False)["events"]
    assert small.shape == (3, *NET) and small[:2].sum() > 0
    # The stream wins when a frame has both.
    both = prepare_inputs(make_frame(events_image=np.zeros((*HW, 3), np.float32)), NET,
                          ["events"])
    assert both["events"].abs().sum() > 0
    with pytest.raises(ValueError, match="H x W x 3"):
        prepare_inputs(make_frame(events=None, events_image=np.zeros(HW, np.float32)), NET,
                       ["events"])


def test_depth_and_event_images_must_align_with_the_camera():
    """Another resolution of the camera's view is resized; another aspect is refused with
    both sizes named (it would be stretched out of alignment), and so is a non-finite event
    image."""
    half = make_frame(depth=np.ones((HW[0] // 2, HW[1] // 2), np.float32))
    assert prepare_inputs(half, NET, ["depth"])["depth"].shape == (3, *NET)
    wide = make_frame(depth=np.ones((HW[0], HW[1] + 20), np.float32))
    with pytest.raises(ValueError, match="depth image is 48 x 84 pixels and the camera 48 x 64"):
        prepare_inputs(wide, NET, ["depth"])
    image = np.zeros((*HW, 3), np.float32)
    image[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="1 non-finite"):
        prepare_inputs(make_frame(events=None, events_image=image), NET, ["events"])
    with pytest.raises(ValueError, match="the event image is 30 x 50 pixels"):
        prepare_inputs(make_frame(events=None, events_image=np.zeros((30, 50, 3), np.float32)),
                       NET, ["events"])


def test_integer_event_times_are_refused():
    """Integer times (MUSES stores microseconds) would be read as seconds and almost every
    event would fall outside the window."""
    with pytest.raises(ValueError, match="t must be float seconds"):
        render_events(np.zeros(3), np.zeros(3), np.array([1, 2, 3], np.int64), np.ones(3), HW)


def test_resize_dense_returns_float_at_every_size():
    from anyseg_core.sensors import resize_dense

    image = torch.full((3, *HW), 7, dtype=torch.uint8)
    for size in (HW, NET):
        out = resize_dense(image, size)
        assert out.dtype == torch.float32 and out.shape == (3, *size)
