"""SegmentationPipeline (anyseg_ros.pipeline): synchronised frames to published images, no ROS.

A small random-weight checkpoint with all four modalities is written once for the module.
Its BatchNorm statistics are calibrated on random inputs first, so its labels vary over the
image (with untouched statistics a random model gives one class everywhere, and comparing
labels would prove little). Frames are built by hand, the way the node fills them: the
payloads are what anyseg_ros.conversions returns, wrapped in the sync module's Stamped.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from anyseg_core.checkpoint import save_model
from anyseg_core.model import AnymodalSegmentor
from anyseg_core.modalities import IGNORE_INDEX
from anyseg_core.runtime import Runtime
from anyseg_core.sensors import Events, RawFrame
from anyseg_ros.conversions import sec_to_stamp
from anyseg_core.sensors.geometry import scale_intrinsics
from anyseg_ros.payloads import (CameraImage, DepthImage, EventImage, Geometry,
                                 geometry_from_camera, with_geometry)
from anyseg_ros.pipeline import FrameSkipped, SegmentationPipeline
from anyseg_ros.params import ConfigError, check_value, defaults, geometry_from_params
from anyseg_ros.sync import Frame, Stamped

MODALITIES = ["camera", "events", "lidar", "depth"]
NET_HW = (64, 96)
H, W = 120, 160                       # camera images, not the network size
K = np.array([[100.0, 0.0, 79.5], [0.0, 100.0, 59.5], [0.0, 0.0, 1.0]])
STAMP = 1_700_000_000.5               # UNIX-like stamps: float64 matters
CAM_FRAME = "cam_optical"


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = AnymodalSegmentor(MODALITIES, 19, embed_dim=32, pretrained=False)
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average over the calibration batches
    with torch.no_grad():
        for _ in range(3):
            model({m: torch.randn(2, 3, *NET_HW) for m in MODALITIES})
    model.eval()
    path = tmp_path_factory.mktemp("pipeline_ckpt") / "random.safetensors"
    return save_model(path, model, {"input_size": list(NET_HW), "stage": "teacher", "step": 0,
                                    "train_config": {}})


@pytest.fixture(scope="module")
def runtime(checkpoint):
    return Runtime(checkpoint, device="cpu", input_size=NET_HW, warmup=False)


@pytest.fixture(scope="module")
def data():
    """Sensor data of one instant, in the raw units the conversions produce."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (H // 8, W // 8, 3), dtype=np.uint8)
    image = np.kron(coarse, np.ones((8, 8, 1), np.uint8))
    image = np.clip(image.astype(np.int16) + rng.integers(-20, 21, image.shape), 0, 255
                    ).astype(np.uint8)
    n = 4000
    z = rng.uniform(1.5, 40.0, n)
    pts = np.stack([rng.uniform(-0.8, 0.8, n) * z, rng.uniform(-0.6, 0.6, n) * z, z,
                    rng.uniform(0, 1, n)], axis=1).astype(np.float32)
    ne = 6000
    t = np.sort(STAMP - rng.uniform(0.0, 0.029, ne))
    events = Events(x=rng.integers(0, W, ne).astype(np.uint16),
                    y=rng.integers(0, H, ne).astype(np.uint16), t=t,
                    p=rng.integers(0, 2, ne).astype(np.uint8))
    depth_mm = np.kron(rng.integers(500, 30000, (H // 8, W // 8)),
                       np.ones((8, 8), np.int64)).astype(np.uint16)
    depth_mm[rng.uniform(size=(H, W)) < 0.1] = 0  # no measurement
    return {"image": image, "lidar": pts, "events": events, "depth_mm": depth_mm}


def make_frame(stamp: float, pivot: str, **items) -> Frame:
    """items: sensor -> list of (stamp, payload), in stamp order."""
    return Frame(stamp=stamp, pivot=pivot,
                 items={s: [Stamped(t, t + 0.01, p) for t, p in msgs] for s, msgs in items.items()},
                 live={s: True for s in MODALITIES}, dropped=0, waited=0.0)


def split_events(ev: Events, parts: int) -> list[Events]:
    cuts = np.array_split(np.arange(len(ev)), parts)
    return [Events(ev.x[c], ev.y[c], ev.t[c], ev.p[c]) for c in cuts]


def full_frame(d, camera_encoding="rgb8"):
    image = d["image"] if camera_encoding == "rgb8" else d["image"][..., ::-1].copy()
    packets = split_events(d["events"], 3)
    return make_frame(
        STAMP, "camera",
        camera=[(STAMP, CameraImage(image, camera_encoding, CAM_FRAME))],
        lidar=[(STAMP - 0.012, d["lidar"])],
        events=[(STAMP - 0.02, packets[0]), (STAMP - 0.01, packets[1]), (STAMP, packets[2])],
        depth=[(STAMP + 0.004, DepthImage(d["depth_mm"], "16UC1"))])


def expected_raw(d, **changes) -> RawFrame:
    raw = RawFrame(image_hw=(H, W), K=K, t_cam=STAMP, camera=d["image"], camera_encoding="rgb8",
                   lidar=d["lidar"], T_cam_lidar=np.eye(4), events=d["events"], events_K=K,
                   events_hw=(H, W), depth=d["depth_mm"], depth_encoding="16UC1")
    for key, value in changes.items():
        setattr(raw, key, value)
    return raw


def varied(labels: np.ndarray) -> bool:
    return len(np.unique(labels)) >= 3


# --------------------------------------------------------------------- (a) all modalities
def test_all_modalities_shapes_colors_stamp_and_agreement_with_runtime(runtime, data):
    pipe = SegmentationPipeline(runtime, MODALITIES)
    frame = full_frame(data)
    seg = pipe.run(frame, Geometry(K=K, image_hw=(H, W), frame_id="from_geometry"),
                   confidence=True)
    assert seg.labels.dtype == np.uint8 and seg.labels.shape == (H, W)
    assert seg.color.dtype == np.uint8 and seg.color.shape == (H, W, 3)
    np.testing.assert_array_equal(seg.color, runtime.palette.numpy()[seg.labels])
    assert seg.confidence.dtype == np.float32 and seg.confidence.shape == (H, W)
    assert ((seg.confidence > 0) & (seg.confidence <= 1)).all()
    assert seg.overlay is None  # no alpha asked for
    assert seg.stamp == STAMP and seg.frame_id == CAM_FRAME and seg.pivot == "camera"
    assert set(seg.modalities) == set(MODALITIES) and seg.left_out == {}
    assert seg.frame is frame and seg.inference_ms > 0
    expected = runtime.predict(expected_raw(data), output_size=(H, W)).labels.numpy()
    assert varied(expected)
    np.testing.assert_array_equal(seg.labels, expected)


def test_network_output_resolution(runtime, data):
    pipe = SegmentationPipeline(runtime, MODALITIES, output_resolution="network")
    seg = pipe.run(full_frame(data), Geometry(K=K, image_hw=(H, W)), overlay_alpha=0.5,
                   confidence=True)
    assert seg.labels.shape == NET_HW and seg.color.shape == (*NET_HW, 3)
    assert seg.overlay.shape == (*NET_HW, 3) and seg.confidence.shape == NET_HW
    expected = runtime.predict(expected_raw(data), output_size=NET_HW).labels.numpy()
    np.testing.assert_array_equal(seg.labels, expected)
    # Switching at run time (the node sets the attribute) takes effect on the next frame.
    pipe.output_resolution = "camera"
    assert pipe.run(full_frame(data), Geometry(K=K, image_hw=(H, W))).labels.shape == (H, W)


# ---------------------------------------------------------------------- (b) camera missing
def test_camera_missing_keeps_the_camera_geometry(runtime, data):
    pipe = SegmentationPipeline(runtime, MODALITIES)
    packets = split_events(data["events"], 2)
    frame = make_frame(STAMP, "lidar", lidar=[(STAMP, data["lidar"])],
                       events=[(STAMP - 0.01, packets[0]), (STAMP + 0.007, packets[1])],
                       depth=[(STAMP - 0.003, DepthImage(data["depth_mm"], "16UC1"))])
    geometry = Geometry(K=K, image_hw=(H, W), frame_id="rig_camera")
    seg = pipe.run(frame, geometry, overlay_alpha=0.5)
    assert seg.labels.shape == (H, W) and seg.color.shape == (H, W, 3)
    assert seg.frame_id == "rig_camera"
    assert seg.stamp == STAMP + 0.007  # the newest message the output is made of
    assert seg.overlay is None  # nothing to draw over
    assert set(seg.modalities) == {"lidar", "events", "depth"} and seg.pivot == "lidar"
    raw = expected_raw(data, camera=None)
    expected = runtime.predict(raw, output_size=(H, W)).labels.numpy()
    assert varied(expected)
    np.testing.assert_array_equal(seg.labels, expected)


def test_outputs_carry_their_input_header_stamp_exactly(runtime, data):
    """Float seconds cannot hold nanoseconds at UNIX times (1.7e9 s has a 240 ns step): the
    output is stamped with its input message's own (sec, nanosec), so consumers can pair it
    with that input by exact stamp."""
    pipe = SegmentationPipeline(runtime, MODALITIES)
    geometry = Geometry(K=K, image_hw=(H, W))
    camera_exact, lidar_exact = (1_700_000_000, 123_456_789), (1_700_000_000, 140_000_001)
    camera_t, lidar_t = (a + b * 1e-9 for a, b in (camera_exact, lidar_exact))
    assert sec_to_stamp(camera_t) != camera_exact  # what a float round trip would publish
    camera = Stamped(camera_t, 0.0, CameraImage(data["image"], "rgb8", CAM_FRAME), camera_exact)
    lidar = Stamped(lidar_t, 0.0, data["lidar"], lidar_exact)
    frame = Frame(stamp=camera_t, pivot="camera", items={"camera": [camera], "lidar": [lidar]},
                  live={s: True for s in MODALITIES}, dropped=0, waited=0.0)
    assert pipe.run(frame, geometry).header_stamp == camera_exact
    # Without the camera: the newest message the output is made of, here the lidar's.
    frame = Frame(stamp=lidar_t, pivot="lidar", items={"lidar": [lidar]},
                  live={s: True for s in MODALITIES}, dropped=0, waited=0.0)
    assert pipe.run(frame, geometry).header_stamp == lidar_exact
    # A synchroniser fed without exact stamps: the nearest nanosecond of the float stamp.
    assert pipe.run(full_frame(data), geometry).header_stamp == sec_to_stamp(STAMP)


# ------------------------------------------------------------- (c) no camera and no K
def test_no_camera_and_no_intrinsics_leaves_lidar_and_events_out(runtime, data):
    pipe = SegmentationPipeline(runtime, MODALITIES)
    frame = make_frame(STAMP, "lidar", lidar=[(STAMP, data["lidar"])],
                       events=[(STAMP, data["events"])])
    raw, left_out = pipe.raw_frame(frame, Geometry())
    assert set(left_out) == {"lidar", "events"}
    assert all("intrinsics" in why for why in left_out.values()), left_out
    assert raw.lidar is None and raw.events is None
    with pytest.raises(FrameSkipped, match="lidar") as err:
        pipe.run(frame, Geometry())
    assert "events" in str(err.value) and "intrinsics" in str(err.value)

    # An output size known (camera.height / width) but still no K: same reason, same skip.
    with pytest.raises(FrameSkipped, match="intrinsics"):
        pipe.run(frame, Geometry(image_hw=(H, W)))

    # Depth needs no intrinsics: it runs alone, and says what it left out.
    frame = make_frame(STAMP, "lidar", lidar=[(STAMP, data["lidar"])],
                       depth=[(STAMP, DepthImage(data["depth_mm"], "16UC1"))])
    seg = pipe.run(frame, Geometry(image_hw=(H, W), frame_id="rig_camera"))
    assert seg.modalities == ("depth",) and seg.labels.shape == (H, W)
    assert set(seg.left_out) == {"lidar"} and "intrinsics" in seg.left_out["lidar"]

    # No geometry at all: nothing to draw on, even with depth.
    with pytest.raises(FrameSkipped, match="no output geometry"):
        pipe.run(frame, Geometry())


def test_camera_without_intrinsics_runs_camera_and_leaves_lidar_out(runtime, data):
    pipe = SegmentationPipeline(runtime, MODALITIES)
    frame = make_frame(STAMP, "camera", camera=[(STAMP, CameraImage(data["image"], "rgb8",
                                                                    CAM_FRAME))],
                       lidar=[(STAMP, data["lidar"])])
    seg = pipe.run(frame, Geometry())
    assert seg.modalities == ("camera",) and seg.labels.shape == (H, W)
    assert set(seg.left_out) == {"lidar"} and seg.frame_id == CAM_FRAME


# ------------------------------------------ camera.K from parameters, no CameraInfo
def test_camera_K_parameter_without_a_size_is_for_the_images_as_they_come(runtime, data):
    # A principal point off the exact centre (as on real cameras): its size is not guessed
    # from it (2 * cy + 1 would be 122 x 166 here, and K would be rescaled by mistake).
    K_param = np.array([[100.0, 0.0, 82.3], [0.0, 100.0, 60.7], [0.0, 0.0, 1.0]])
    values = defaults()
    values["camera.K"] = K_param.ravel().tolist()
    geometry = geometry_from_params(values)
    assert geometry.image_hw is None and np.array_equal(geometry.K, K_param)
    pipe = SegmentationPipeline(runtime, MODALITIES)
    image = CameraImage(data["image"], "rgb8", CAM_FRAME)
    frame = make_frame(STAMP, "camera", camera=[(STAMP, image)], lidar=[(STAMP, data["lidar"])])
    raw, left_out = pipe.raw_frame(frame, geometry)
    assert left_out == {} and np.array_equal(raw.K, K_param) and raw.image_hw == (H, W)
    # The node completes the geometry from the first image (no CameraInfo yet): a camera
    # outage then keeps the camera's size and frame id.
    learned = geometry_from_camera(geometry, image)
    assert learned.image_hw == (H, W) and learned.frame_id == CAM_FRAME
    assert geometry_from_camera(learned, image) is learned
    # A parameter set later (any, e.g. overlay.alpha) rebuilds the geometry from the
    # parameters: the learned size stays.
    assert geometry_from_params(values, learned).image_hw == (H, W)
    seg = pipe.run(make_frame(STAMP, "lidar", lidar=[(STAMP, data["lidar"])]), learned)
    assert seg.labels.shape == (H, W) and seg.frame_id == CAM_FRAME
    # A size given with K says which images K is for: other images are rescaled, and an
    # image never replaces it.
    values["camera.height"], values["camera.width"] = 2 * H, 2 * W
    sized = geometry_from_params(values)
    assert sized.image_hw == (2 * H, 2 * W)
    assert geometry_from_camera(sized, image).image_hw == (2 * H, 2 * W)
    raw, _ = pipe.raw_frame(frame, sized)
    np.testing.assert_allclose(raw.K, scale_K(K_param, (2 * H, 2 * W), (H, W)))
    values["camera.width"] = 0
    with pytest.raises(ConfigError, match="camera.height and camera.width"):
        geometry_from_params(values)


def test_lens_distortion_reaches_lidar_and_only_a_separate_event_camera(runtime, data):
    """The geometry's distortion (CameraInfo's D, or camera.D) goes with the frame: LiDAR is
    drawn into the distorted image; events are distorted only when they come from a
    separate event camera (events.K set), not when they are the camera's own pixels."""
    D = ("plumb_bob", (-0.25, 0.08, 0.0, 0.0, 0.0))
    pipe = SegmentationPipeline(runtime, MODALITIES)
    frame = full_frame(data)
    own = pipe.raw_frame(frame, Geometry(K=K, image_hw=(H, W), distortion=D))[0]
    assert own.distortion == D and own.events_distortion is None
    plain = pipe.raw_frame(frame, Geometry(K=K, image_hw=(H, W)))[0]
    assert not torch.equal(runtime.prepare(own)["lidar"], runtime.prepare(plain)["lidar"])
    torch.testing.assert_close(runtime.prepare(own)["events"], runtime.prepare(plain)["events"],
                               rtol=0, atol=0)
    separate = Geometry(K=K, image_hw=(H, W), distortion=D, events_K=K, events_hw=(H, W))
    raw = pipe.raw_frame(frame, separate)[0]
    assert raw.events_distortion == D
    assert not torch.equal(runtime.prepare(raw)["events"], runtime.prepare(plain)["events"])
    # the parameters: camera.D with its model, checked
    values = defaults()
    values["camera.K"], values["camera.D"] = K.ravel().tolist(), list(D[1])
    assert geometry_from_params(values).distortion == D
    values["camera.distortion_model"] = "equidistant"
    for seen in (False, True):  # checked even once a CameraInfo (with its own D) has come
        with pytest.raises(ConfigError, match="camera.D: distortion model equidistant takes 4"):
            geometry_from_params(values, Geometry(), camera_info_seen=seen)
    with pytest.raises(ConfigError, match="camera.distortion_model must be one of"):
        check_value("camera.distortion_model", "fov")
    values["camera.distortion_model"] = "plumb_bob"  # the model right again; rectified images:
    values["camera.rectified"] = True                # no distortion to give
    with pytest.raises(ConfigError, match="camera.rectified is true"):
        geometry_from_params(values)


def test_stereo_rectification_rotates_lidar_and_separate_events_into_the_rectified_frame(
        runtime, data):
    """Rectified images of a stereo camera (camera.rectified, CameraInfo R): points in the
    camera's own frame are turned by R before projection; events only when they come from a
    separate event camera."""
    c, s = np.cos(0.03), np.sin(0.03)
    R = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    T = np.eye(4)
    T[:3, 3] = (0.1, 0.0, -0.2)
    pipe = SegmentationPipeline(runtime, MODALITIES)
    frame = full_frame(data)
    geometry = Geometry(K=K, image_hw=(H, W), T_cam_lidar=T, R_rect=R, events_K=K,
                        events_hw=(H, W))
    raw = pipe.raw_frame(frame, geometry)[0]
    R4 = np.eye(4)
    R4[:3, :3] = R
    np.testing.assert_allclose(raw.T_cam_lidar, R4 @ T)
    np.testing.assert_allclose(raw.T_cam_events, R4)
    plain = pipe.raw_frame(frame, with_geometry(geometry, R_rect=None))[0]
    assert not torch.equal(runtime.prepare(raw)["lidar"], runtime.prepare(plain)["lidar"])
    own = pipe.raw_frame(frame, with_geometry(geometry, events_K=None, events_hw=None))[0]
    assert own.T_cam_events is None
    np.testing.assert_allclose(own.T_cam_lidar, R4 @ T)


def test_event_camera_size_without_its_intrinsics_is_a_config_error():
    values = defaults()
    values["events.height"], values["events.width"] = 260, 346
    with pytest.raises(ConfigError, match="needs its intrinsics events.K"):
        geometry_from_params(values)
    values["events.K"] = [300.0, 0.0, 173.0, 0.0, 300.0, 130.0, 0.0, 0.0, 1.0]
    assert geometry_from_params(values).events_hw == (260, 346)


# --------------------------------------------------- (d) CameraInfo at another resolution
def scale_K(K, from_hw, to_hw):
    """The pipeline scales intrinsics with anyseg_core's scale_intrinsics (numpy here)."""
    return scale_intrinsics(K, from_hw, to_hw).numpy()


def test_scale_K_maps_pixel_centres():
    rng = np.random.default_rng(1)
    small, big = (60, 80), (120, 160)
    K_small = np.array([[50.0, 0.0, 39.5], [0.0, 50.0, 29.5], [0.0, 0.0, 1.0]])
    K_big = scale_K(K_small, small, big)
    np.testing.assert_allclose(K_big, K)  # 2x binning: f doubles, (c + 0.5) doubles
    np.testing.assert_allclose(scale_K(K_big, big, small), K_small)
    # Any 3D point lands at the same relative place in both images (pixel centres at integers,
    # the image spanning [-0.5, W - 0.5)), for a non-integer factor too.
    pts = np.stack([rng.uniform(-5, 5, 50), rng.uniform(-3, 3, 50), rng.uniform(2, 30, 50)])
    for to_hw in (big, (45, 100)):
        K2 = scale_K(K_small, small, to_hw)
        uv1 = (K_small @ pts)[:2] / pts[2]
        uv2 = (K2 @ pts)[:2] / pts[2]
        np.testing.assert_allclose((uv1[0] + 0.5) / small[1], (uv2[0] + 0.5) / to_hw[1])
        np.testing.assert_allclose((uv1[1] + 0.5) / small[0], (uv2[1] + 0.5) / to_hw[0])


def test_camera_info_of_another_binning_is_rescaled_to_the_image(runtime, data):
    pipe = SegmentationPipeline(runtime, MODALITIES)
    frame = make_frame(STAMP, "camera",
                       camera=[(STAMP, CameraImage(data["image"], "rgb8", CAM_FRAME))],
                       lidar=[(STAMP, data["lidar"])])
    K_full = np.array([[200.0, 0.0, 159.5], [0.0, 200.0, 119.5], [0.0, 0.0, 1.0]])  # 240x320
    np.testing.assert_allclose(scale_K(K_full, (240, 320), (H, W)), K)
    raw_info, left_info = pipe.raw_frame(frame, Geometry(K=K_full, image_hw=(240, 320)))
    raw_image, left_image = pipe.raw_frame(frame, Geometry(K=K, image_hw=(H, W)))
    assert left_info == left_image == {}
    assert raw_info.image_hw == (H, W)
    np.testing.assert_allclose(raw_info.K, K)
    lidar_info = runtime.prepare(raw_info)["lidar"]
    lidar_image = runtime.prepare(raw_image)["lidar"]
    torch.testing.assert_close(lidar_info, lidar_image, rtol=0, atol=0)
    # The check can fail: the unscaled CameraInfo K would put the points elsewhere.
    unscaled = expected_raw(data, K=K_full, events=None, depth=None)
    assert not torch.equal(runtime.prepare(unscaled)["lidar"], lidar_image)
    seg_info = pipe.run(frame, Geometry(K=K_full, image_hw=(240, 320)))
    seg_image = pipe.run(frame, Geometry(K=K, image_hw=(H, W)))
    assert seg_info.labels.shape == (H, W)
    np.testing.assert_array_equal(seg_info.labels, seg_image.labels)


# --------------------------------------------------------------------------- (e) events
def test_event_packets_are_concatenated(runtime, data):
    pipe = SegmentationPipeline(runtime, MODALITIES)
    ev = data["events"]
    empty = Events(np.zeros(0, np.uint16), np.zeros(0, np.uint16), np.zeros(0),
                   np.zeros(0, np.uint8))
    packets = split_events(ev, 4)
    items = [(STAMP - 0.03 + 0.01 * i, p) for i, p in enumerate(packets[:2])]
    items += [(STAMP - 0.01, empty), (STAMP - 0.005, packets[2]), (STAMP, packets[3])]
    frame = make_frame(STAMP, "events", events=items)
    geometry = Geometry(K=K, image_hw=(H, W))
    raw, left_out = pipe.raw_frame(frame, geometry)
    assert left_out == {} and raw.events_image is None
    assert len(raw.events) == len(ev)
    for a in ("x", "y", "t", "p"):
        got = getattr(raw.events, a)
        np.testing.assert_array_equal(np.asarray(got), getattr(ev, a))
        assert got.dtype == torch.from_numpy(getattr(ev, a)[:1]).dtype, a
    one = pipe.raw_frame(make_frame(STAMP, "events", events=[(STAMP, ev)]), geometry)[0]
    torch.testing.assert_close(runtime.prepare(raw)["events"], runtime.prepare(one)["events"],
                               rtol=0, atol=0)
    assert runtime.prepare(raw)["events"].abs().sum() > 0

    # Only empty packets: an empty event frame, still an input.
    raw, _ = pipe.raw_frame(make_frame(STAMP, "events", events=[(STAMP, empty)]), geometry)
    assert len(raw.events) == 0 and "events" in runtime.prepare(raw)


def test_event_image_payload_is_the_events_image(runtime, data):
    pipe = SegmentationPipeline(runtime, MODALITIES)
    rng = np.random.default_rng(2)
    ev_image = rng.integers(0, 5, (H // 2, W // 2, 3)).astype(np.uint8)
    frame = make_frame(STAMP, "camera",
                       camera=[(STAMP, CameraImage(data["image"], "rgb8", CAM_FRAME))],
                       events=[(STAMP - 0.01, EventImage(np.zeros_like(ev_image))),
                               (STAMP, EventImage(ev_image))])
    geometry = Geometry(K=K, image_hw=(H, W))
    raw, _ = pipe.raw_frame(frame, geometry)
    assert raw.events is None
    np.testing.assert_array_equal(np.asarray(raw.events_image), ev_image)  # the newest one
    seg = pipe.run(frame, geometry)
    assert set(seg.modalities) == {"camera", "events"}
    expected = runtime.predict(RawFrame(image_hw=(H, W), K=K, t_cam=STAMP, camera=data["image"],
                                        events_image=ev_image), output_size=(H, W))
    np.testing.assert_array_equal(seg.labels, expected.labels.numpy())


# -------------------------------------------------------------------------- (f) overlay
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_overlay_alpha_0_is_the_camera_and_alpha_1_the_colors(runtime, data, encoding):
    pipe = SegmentationPipeline(runtime, MODALITIES)
    geometry = Geometry(K=K, image_hw=(H, W))
    frame = full_frame(data, encoding)
    seg0 = pipe.run(frame, geometry, overlay_alpha=0.0)
    assert seg0.overlay.dtype == np.uint8 and seg0.overlay.shape == (H, W, 3)
    np.testing.assert_array_equal(seg0.overlay, data["image"])  # rgb, whatever the encoding
    seg1 = pipe.run(frame, geometry, overlay_alpha=1.0)
    np.testing.assert_array_equal(seg1.overlay, seg1.color)
    half = pipe.run(frame, geometry, overlay_alpha=0.5).overlay.astype(np.float64)
    mix = 0.5 * data["image"] + 0.5 * seg1.color
    assert np.abs(half - mix).max() <= 0.5 + 1e-9


def test_overlay_leaves_ignored_pixels_showing_the_camera(runtime, data):
    image = data["image"]
    raw = RawFrame(image_hw=(H, W), K=K, camera=torch.from_numpy(image[..., ::-1].copy()),
                   camera_encoding="bgr8")
    labels = torch.zeros(H, W, dtype=torch.uint8)
    labels[:, : W // 2] = 3
    labels[10:30, 20:120] = IGNORE_INDEX
    color = runtime.colorize(labels)
    ignore = (labels == IGNORE_INDEX).numpy()
    for alpha in (0.0, 0.3, 1.0):
        out = SegmentationPipeline._overlay(raw, labels, color, alpha).numpy()
        np.testing.assert_array_equal(out[ignore], image[ignore])
        want = np.round((1 - alpha) * image.astype(np.float64) + alpha * color.numpy())
        assert np.abs(out[~ignore] - want[~ignore]).max() <= 1, alpha
    # At the network size the camera is resized to the labels first.
    small = torch.full(NET_HW, IGNORE_INDEX, dtype=torch.uint8)
    out = SegmentationPipeline._overlay(raw, small, runtime.colorize(small), 1.0)
    assert tuple(out.shape) == (*NET_HW, 3)

    # End to end: pixels the runtime gives up on (min_confidence) show the camera at alpha 1.
    pipe = SegmentationPipeline(runtime, MODALITIES)
    geometry = Geometry(K=K, image_hw=(H, W))
    conf = pipe.run(full_frame(data), geometry, confidence=True).confidence
    before = runtime.min_confidence
    runtime.min_confidence = float(np.median(conf))
    try:
        seg = pipe.run(full_frame(data), geometry, overlay_alpha=1.0)
    finally:
        runtime.min_confidence = before
    ignore = seg.labels == IGNORE_INDEX
    assert 0 < ignore.mean() < 1
    np.testing.assert_array_equal(seg.overlay[ignore], image[ignore])
    np.testing.assert_array_equal(seg.overlay[~ignore], seg.color[~ignore])
    assert (seg.color[ignore] == 0).all()  # 255 is black in the colour image


# ---------------------------------------------------- (g) depth, modality subsets, errors
def test_depth_16UC1_is_millimetres(runtime, data):
    pipe = SegmentationPipeline(runtime, ["depth"])
    frame = full_frame(data)
    seg = pipe.run(frame, Geometry(K=K, image_hw=(H, W)))
    assert seg.modalities == ("depth",) and seg.labels.shape == (H, W)
    assert seg.frame_id == CAM_FRAME and seg.stamp == STAMP  # the camera frame's geometry
    metres = data["depth_mm"].astype(np.float32) / np.float32(1000.0)
    inputs = runtime.prepare(RawFrame(image_hw=(H, W), K=K, depth=metres,
                                      depth_encoding="32FC1"))
    expected = runtime.predict(inputs, output_size=(H, W)).labels.numpy()
    assert varied(expected)
    np.testing.assert_array_equal(seg.labels, expected)
    # ... and not metres: the same numbers read as 32FC1 metres give other inputs.
    as_metres = runtime.prepare(RawFrame(image_hw=(H, W), K=K,
                                         depth=data["depth_mm"].astype(np.float32),
                                         depth_encoding="32FC1"))
    assert not torch.equal(as_metres["depth"], inputs["depth"])


def test_modalities_outside_the_pipeline_are_ignored(runtime, data):
    frame = full_frame(data)
    geometry = Geometry(K=K, image_hw=(H, W))
    for mods in (["camera", "depth"], ["lidar"], ["events", "lidar"]):
        pipe = SegmentationPipeline(runtime, mods)
        seg = pipe.run(frame, geometry)
        assert set(seg.modalities) == set(mods), mods
        assert seg.left_out == {}
        raw, _ = pipe.raw_frame(frame, geometry)
        inputs = {m: x for m, x in runtime.prepare(raw).items() if m in mods}
        expected = runtime.predict(inputs, output_size=(H, W)).labels.numpy()
        np.testing.assert_array_equal(seg.labels, expected)
    # Left-out modalities are not uploaded at all (nor reported as left out).
    raw, left_out = SegmentationPipeline(runtime, ["camera"]).raw_frame(frame, geometry)
    assert raw.lidar is None and raw.events is None and raw.depth is None and left_out == {}
    # A frame with only modalities the pipeline does not use is skipped, not run.
    only_lidar = make_frame(STAMP, "lidar", lidar=[(STAMP, data["lidar"])])
    with pytest.raises(FrameSkipped, match="no usable modality"):
        SegmentationPipeline(runtime, ["camera", "depth"]).run(only_lidar, geometry)


def test_bad_arguments_raise_value_error(runtime, checkpoint, tmp_path):
    with pytest.raises(ValueError, match="radar"):
        SegmentationPipeline(runtime, ["camera", "radar"])
    with pytest.raises(ValueError, match="huge"):
        SegmentationPipeline(runtime, ["camera"], output_resolution="huge")
    model = AnymodalSegmentor(["camera", "lidar"], 19, embed_dim=16, pretrained=False)
    small = save_model(tmp_path / "cam_lidar.safetensors", model,
                       {"input_size": list(NET_HW), "stage": "teacher", "step": 0,
                        "train_config": {}})
    with pytest.raises(ValueError, match="depth"):
        SegmentationPipeline(Runtime(small, device="cpu", warmup=False), ["camera", "depth"])


def test_with_geometry_copies():
    g = Geometry(K=K, image_hw=(H, W), frame_id="a")
    h = with_geometry(g, frame_id="b", image_hw=(1, 2))
    assert (g.frame_id, g.image_hw) == ("a", (H, W))
    assert (h.frame_id, h.image_hw) == ("b", (1, 2)) and h.K is g.K
