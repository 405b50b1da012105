"""The MUSES and DELIVER readers against small HAND-WRITTEN fixtures in each data set's own
documented layout, independent of this project's exporter and writers.

Nothing from ``anyseg_core`` writes a fixture file here: folders, file names, PNG modes,
binary LiDAR sweeps, HDF5 event files, meta.json and calib.json are all built with numpy,
PIL, h5py and plain file writes from the facts below, and the expected values (projected
pixels, event counts, train ids) are worked out by hand in the comments.

Sources of the layout facts (see also ``../shared/docs/sensors-and-formats.md``):

MUSES -- the MUSES SDK (github.com/timbroed/MUSES): ``README.md`` (folder list, test ground
truth withheld), ``processing/utils.py`` (meta.json / calib.json loading, ``sensor2rgb @ p``
then ``K @ p / z`` projection, the 1 m minimum range, LiDAR channels range / intensity / z),
``processing/lidar_processing.py`` (``np.fromfile(float64).reshape(-1, 6)``, column 5 = time),
``processing/event_camera_processing.py`` (``events/x y t p``, the last 30000 us of the
file, p == 1 -> channel 0, p == 0 -> channel 1, channel 2 zero, ``event2rgb`` rotation),
``scripts/project_sensors_to_rgb.py`` (meta.json ``path_to_*`` are relative to the root).

DELIVER -- the DELIVER / CMNeXt repository (github.com/jamycheung/DELIVER): ``README.md``
(``<mod>/<condition>/<split>/<scene>/<frame>_<mod>_front.png``, e.g.
``depth/cloud/test/MAP_10_point102/045050_depth_front.png``) and
``semseg/datasets/deliver.py`` (the RGB list ``img/*/<split>/*/*.png``; other paths by
replacing ``/img`` and ``_rgb``; depth read from ``hha``; ``[:3]`` of 4 channels, 1 channel
repeated; low-resolution events resized nearest; label = channel 0, 255 -> 0, then - 1 on
uint8 so stored 0 -> 255 and 1..25 -> 0..24; the 25 class names).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
import torch
from PIL import Image

from anyseg_core.data.deliver import DeliverDataset, DeliverError
from anyseg_core.data.muses import MusesDataset, MusesError, list_scenes, read_frame

# =========================================================================== MUSES

# The frame camera is 1920 x 1080 (MUSES docs); the reader takes the image size from the PNG
# and calib.json's K is for that size, so the fixture uses the real resolution and the
# network size is exactly 1/20 of it.
MUSES_HW = (1080, 1920)
NET_HW = (54, 96)

# One scene per (split, weather, time of day); stems like REC0008_frame_079714 (MUSES docs).
MUSES_SCENES = [
    ("REC0008_frame_079714", "train", "clear", "day"),   # the hand-checked scene
    ("REC0011_frame_000123", "train", "fog", "night"),
    ("REC0020_frame_004400", "val", "rain", "day"),
    ("REC0031_frame_000050", "test", "snow", "night"),   # test: ground truth withheld
]
MAIN = MUSES_SCENES[0][0]

# calib.json. K_rgb: fx = fy = 1000, principal point (949.5, 529.5). At the network size
# (1/20, pixel centres at integers: u' = (u + 0.5) / 20 - 0.5) that is fx' = 50,
# cx' = 47, cy' = 26.
K_RGB = [[1000.0, 0.0, 949.5], [0.0, 1000.0, 529.5], [0.0, 0.0, 1.0]]
# lidar2rgb (LiDAR x forward, y left, z up -> camera x right, y down, z forward) plus a
# translation: p_cam = (-y + 0.5, -z - 0.25, x + 1.0).
LIDAR2RGB = [[0.0, -1.0, 0.0, 0.5],
             [0.0, 0.0, -1.0, -0.25],
             [1.0, 0.0, 0.0, 1.0],
             [0.0, 0.0, 0.0, 1.0]]
# The event camera: 1280 x 720, K_event with fx = fy = 600 and principal point (640, 360).
K_EVENT = [[600.0, 0.0, 640.0], [0.0, 600.0, 360.0], [0.0, 0.0, 1.0]]
# event2rgb: a yaw about the camera's y axis with tan(a) = 0.2, plus a translation the
# renderer ignores (no parallax, as in the SDK). A ray (0, 0, 1) of the event camera is
# (sin a, 0, cos a) in the RGB camera, i.e. x/z = +0.2.
_C, _S = 1 / np.sqrt(1.04), 0.2 / np.sqrt(1.04)
EVENT2RGB = [[_C, 0.0, _S, 0.05],
             [0.0, 1.0, 0.0, 0.01],
             [-_S, 0.0, _C, -0.02],
             [0.0, 0.0, 0.0, 1.0]]

# Frame camera exposure (meta.json, microseconds on the sensors' clock).
EXPOSURE_START_US = 1_650_000_000_100_000
EXPOSURE_END_US = 1_650_000_000_110_000
T_CAM_S = (EXPOSURE_START_US + EXPOSURE_END_US) / 2 / 1e6
T_LAST_US = 1_650_000_000_110_000  # the last event of the main scene's file

# LiDAR sweep of the main scene: x, y, z, intensity, ring, time (s). Hand projection with
# p_cam = (-y + 0.5, -z - 0.25, x + 1) and (col, row) = (50 x/z + 47, 50 y/z + 26):
LIDAR_ROWS = np.array([
    # near: p_cam (4, -2, 20) -> x/z 0.2, y/z -0.1 -> pixel (row 21, col 57); range
    # sqrt(19^2 + 3.5^2 + 1.75^2) = sqrt(376.3125)
    [19.0, -3.5, 1.75, 37.0, 12.0, T_CAM_S - 0.040],
    # visible: p_cam (-4, 2, 10) -> x/z -0.4, y/z 0.2 -> pixel (row 36, col 27)
    [9.0, 4.5, -2.25, 5.0, 3.0, T_CAM_S - 0.010],
    # behind the camera (z_cam = -18); would land at (row 22, col 55) if not dropped
    [-19.0, 3.5, -1.75, 80.0, 4.0, T_CAM_S + 0.000],
    # closer than 1 m (range 0.9); would land at (row 19, col 60) if not dropped
    [0.9, 0.0, 0.0, 90.0, 5.0, T_CAM_S + 0.020],
    # far: p_cam (8, -4, 40), the same ray as the near point -> also (21, 57); written LAST,
    # so a last-write-wins projection would show it instead of the nearer point
    [39.0, -7.5, 3.75, 99.0, 13.0, T_CAM_S + 0.045],
], dtype=np.float64)
NEAR_RANGE = float(np.sqrt(376.3125))
VISIBLE_RANGE = float(np.sqrt(9.0 ** 2 + 4.5 ** 2 + 2.25 ** 2))

# Events of the main scene: (x, y, t_us, p). Warped with K_rgb' R K_event^-1 at 1/20:
#   A = event pixel (640, 360): ray (0, 0, 1) -> x/z = 0.2, y/z = 0 -> pixel (row 26, col 57)
#   B = event pixel (640, 480): ray (0, 0.2, 1) -> x/z = 0.2, y/z = 0.2 sqrt(1.04) = 0.204
#       -> (row floor(36.2 + 0.5) = 36, col 57)
#   C = event pixel (520, 360): ray (-0.2, 0, 1) -> x/z = 0 -> (row 26, col 47)
# With the rotation the wrong way round A and B would land in column 37.
EVENTS = [
    (640, 360, T_LAST_US - 25_000, 1),   # A +
    (520, 360, T_LAST_US - 40_000, 1),   # C +, 40 ms before the last event: outside 30 ms
    (640, 480, T_LAST_US - 20_000, 0),   # B -
    (640, 360, T_LAST_US - 10_000, 1),   # A +
    (640, 360, T_LAST_US - 5_000, 0),    # A -
    (640, 360, T_LAST_US - 1_000, 0),    # A -
    (640, 360, T_LAST_US, 1),            # A +  (the last event)
]
PIX_A, PIX_B, PIX_C = (26, 57), (36, 57), (26, 47)

# Camera and label content of the main scene: 60 x 60 blocks centred on a network pixel
# (network pixel (r, c) covers full-resolution rows 20r .. 20r + 19), wide enough that the
# antialiased 1/20 resize sees nothing else there. Cityscapes train ids: 0 road,
# 13 car, 18 bicycle, 255 ignore.
CAM_BACKGROUND = (128, 128, 128)
CAM_BLOCKS = {(5, 10): (255, 0, 0), (40, 80): (0, 255, 0), (10, 5): (0, 0, 255)}
LABEL_BACKGROUND = 0
LABEL_BLOCKS = {(5, 10): 13, (40, 80): 18, (20, 30): 255, (10, 5): 11}

# Normalisation of the network inputs (sensors-and-formats.md): ImageNet for the camera;
# LiDAR [4.917, 6.149, 0.270] / [13.35, 17.64, 1.232]; events (positive, negative counts)
# [0.1258, 0.1273] / [0.544, 0.476].
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
LIDAR_STATS = ((4.917, 6.149, 0.270), (13.35, 17.64, 1.232))
EVENT_STATS = ((0.1258, 0.1273), (0.544, 0.476))


def _raw(x: torch.Tensor, stats) -> torch.Tensor:
    """Undo ``(x - mean) / std`` for the channels ``stats`` names."""
    mean, std = stats
    n = len(mean)
    return x[:n] * torch.tensor(std).view(n, 1, 1) + torch.tensor(mean).view(n, 1, 1)


def _block(image: np.ndarray, rc: tuple[int, int], value) -> None:
    r, c = rc
    image[20 * r - 20:20 * r + 40, 20 * c - 20:20 * c + 40] = value


def _muses_rel(folder: str, split: str, weather: str, tod: str, stem: str, suffix: str) -> str:
    return f"{folder}/{split}/{weather}/{tod}/{stem}{suffix}"


def make_muses(root: Path) -> None:
    """Write MUSES_SCENES in MUSES' layout:
    ``<modality>/<split>/<weather>/<day|night>/<stem>_<suffix>``, meta.json and calib.json at
    the root. meta.json has no path for the ground truth (the real one has none)."""
    meta = {}
    for stem, split, weather, tod in MUSES_SCENES:
        rel = {key: _muses_rel(folder, split, weather, tod, stem, suffix)
               for key, folder, suffix in (
                   ("cam", "frame_camera", "_frame_camera.png"),
                   ("lidar", "lidar", "_lidar.bin"),
                   ("events", "event_camera", "_event_camera.h5"),
                   ("radar", "radar", "_radar.png"),
                   ("label", "gt_semantic", "_gt_labelTrainIds.png"))}
        for r in rel.values():
            (root / r).parent.mkdir(parents=True, exist_ok=True)
        main = stem == MAIN

        cam = np.empty((*MUSES_HW, 3), np.uint8)
        cam[:] = CAM_BACKGROUND if main else (60, 60, 60)
        if main:
            for rc, colour in CAM_BLOCKS.items():
                _block(cam, rc, colour)
        Image.fromarray(cam, "RGB").save(root / rel["cam"], format="PNG")

        if split != "test":
            label = np.full(MUSES_HW, LABEL_BACKGROUND if main else 8, np.uint8)
            if main:
                for rc, tid in LABEL_BLOCKS.items():
                    _block(label, rc, tid)
            Image.fromarray(label, "L").save(root / rel["label"], format="PNG")

        pts = LIDAR_ROWS if main else np.array([[10.0, 0.0, 0.0, 1.0, 0.0, T_CAM_S]])
        pts.astype("<f8").tofile(root / rel["lidar"])

        ev = EVENTS if main else [(100, 100, T_LAST_US, 1)]
        x, y, t, p = (np.array(col) for col in zip(*ev))
        with h5py.File(root / rel["events"], "w") as f:
            # A compression filter from hdf5plugin (Blosc here; the reader's own writer uses
            # Zstd): the files need hdf5plugin to be read at all.
            for name, data, dtype in (("x", x, np.uint16), ("y", y, np.uint16),
                                      ("t", t, np.int64), ("p", p, np.uint8)):
                f.create_dataset(f"events/{name}", data=data.astype(dtype),
                                 **hdf5plugin.Blosc(cname="lz4"))

        meta[stem] = {
            "path_to_frame_camera": rel["cam"], "path_to_lidar": rel["lidar"],
            "path_to_event_camera": rel["events"], "path_to_radar": rel["radar"],
            "path_to_gnss": f"gnss/{split}/{weather}/{tod}/{stem}_gnss.txt",
            "split": split, "weather": weather, "time_of_day": tod,
            "frame_camera_exposure_start_timestamp_us": EXPOSURE_START_US,
            "frame_camera_exposure_end_timestamp_us": EXPOSURE_END_US,
            "clear_day_reference": None,
        }
    (root / "meta.json").write_text(json.dumps(meta, indent=1))
    calib = {
        "intrinsics": {"rgb": {"K": K_RGB}, "event": {"K": K_EVENT}},
        "extrinsics": {"lidar2rgb": LIDAR2RGB, "event2rgb": EVENT2RGB,
                       "radar2rgb": np.eye(4).tolist(), "lidar2gnss": np.eye(4).tolist()},
    }
    (root / "calib.json").write_text(json.dumps(calib))


@pytest.fixture(scope="module")
def muses_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("muses_handmade")
    make_muses(root)
    return root


@pytest.fixture(scope="module")
def muses_item(muses_root):
    """The main scene as a training item (all three modalities, MUSES' zero third event
    channel), with its raw frame."""
    ds = MusesDataset(muses_root, "train", size_hw=NET_HW, event_third="zero",
                      return_raw=True)
    assert ds.scenes[0].name == MAIN
    return ds[0]


def test_muses_scene_and_split_discovery(muses_root):
    train = MusesDataset(muses_root, "train", size_hw=NET_HW)
    val = MusesDataset(muses_root, "val", size_hw=NET_HW)
    assert [s.name for s in train.scenes] == ["REC0008_frame_079714", "REC0011_frame_000123"]
    assert [s.condition for s in train.scenes] == ["clear-day", "fog-night"]
    assert [s.name for s in val.scenes] == ["REC0020_frame_004400"]
    assert val.scenes[0].condition == "rain-day"
    fog = MusesDataset(muses_root, "train", size_hw=NET_HW, conditions=["fog"])
    assert [s.name for s in fog.scenes] == ["REC0011_frame_000123"]
    assert [s.name for s in list_scenes(muses_root, time_of_day="night")] == \
        ["REC0011_frame_000123", "REC0031_frame_000050"]
    # The ground truth path is derived from the frame camera's (meta.json has none).
    assert train.scenes[0].path("label") == \
        muses_root / "gt_semantic/train/clear/day/REC0008_frame_079714_gt_labelTrainIds.png"


def test_muses_test_split_has_no_ground_truth(muses_root):
    # MUSES withholds the test split's labels (SDK README): a clear error, not a crash.
    with pytest.raises(MusesError) as err:
        MusesDataset(muses_root, "test", size_hw=NET_HW)
    assert err.value.path == (muses_root / "gt_semantic/test/snow/night/"
                              "REC0031_frame_000050_gt_labelTrainIds.png")
    assert "withholds" in str(err.value)
    scene = list_scenes(muses_root, split="test")[0]
    frame = read_frame(scene, modalities=["camera"])
    assert frame.label is None and frame.camera.shape == (*MUSES_HW, 3)


def test_muses_raw_lidar_and_events_formats(muses_item):
    raw = muses_item["raw"]
    # float64 x 6 rows, in the order written (x, y, z, intensity, ring, time).
    assert raw.lidar.dtype == np.float64 and raw.lidar.shape == LIDAR_ROWS.shape
    np.testing.assert_array_equal(raw.lidar, LIDAR_ROWS)
    # Column 5 is the time in seconds (not column 4, the ring).
    stamps = raw.meta["stamps"]
    assert stamps["lidar_first"] == pytest.approx(T_CAM_S - 0.040, abs=1e-6)
    assert stamps["lidar_last"] == pytest.approx(T_CAM_S + 0.045, abs=1e-6)
    assert stamps["camera"] == pytest.approx(T_CAM_S, abs=1e-7)
    # events/t is in microseconds: seconds = t / 1e6.
    assert raw.events.t.dtype == np.float64
    assert float(raw.events.t.max()) == pytest.approx(T_LAST_US / 1e6, abs=1e-6)
    assert float(raw.events.t.min()) == pytest.approx((T_LAST_US - 40_000) / 1e6, abs=1e-6)
    np.testing.assert_array_equal(np.asarray(raw.events.x), [e[0] for e in EVENTS])
    np.testing.assert_array_equal(np.asarray(raw.events.y), [e[1] for e in EVENTS])
    np.testing.assert_array_equal(np.asarray(raw.events.p), [e[3] for e in EVENTS])
    # calib.json read in the documented direction: lidar2rgb is T_cam_lidar.
    np.testing.assert_allclose(raw.T_cam_lidar, LIDAR2RGB)
    np.testing.assert_allclose(raw.T_cam_events, EVENT2RGB)


def test_muses_camera_is_rgb_in_row_column_order(muses_item):
    cam = muses_item["inputs"]["camera"]
    assert cam.dtype == torch.float32 and tuple(cam.shape) == (3, *NET_HW)
    rgb = _raw(cam, IMAGENET)
    for (r, c), colour in CAM_BLOCKS.items():
        np.testing.assert_allclose(rgb[:, r, c].numpy(), np.array(colour) / 255, atol=1e-3)
    np.testing.assert_allclose(rgb[:, 0, 0].numpy(), np.array(CAM_BACKGROUND) / 255,
                               atol=1e-3)


def test_muses_label_train_ids_and_ignore(muses_item):
    label = muses_item["label"]
    assert label.dtype == torch.int64 and tuple(label.shape) == NET_HW
    for (r, c), tid in LABEL_BLOCKS.items():
        assert int(label[r, c]) == tid, (r, c)
    assert int(label[0, 0]) == LABEL_BACKGROUND
    # 255 stays the ignore index (the doc warns of a loader that turns it into road).
    assert int((label == 255).sum()) == 9  # the 3 x 3 network pixels of the 60 x 60 block
    raw = muses_item["raw"].label
    assert raw.shape == MUSES_HW and raw[400, 600] == 255 and raw[100, 200] == 13


def test_muses_lidar_projects_to_the_hand_computed_pixels(muses_item):
    lidar = muses_item["inputs"]["lidar"]
    assert lidar.dtype == torch.float32 and tuple(lidar.shape) == (3, *NET_HW)
    img = _raw(lidar, LIDAR_STATS)
    # Near point at (21, 57): range, intensity (column 3), z in the LiDAR frame; the farther
    # point on the same pixel, written after it, loses.
    np.testing.assert_allclose(img[:, 21, 57].numpy(), [NEAR_RANGE, 37.0, 1.75], rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(img[:, 36, 27].numpy(), [VISIBLE_RANGE, 5.0, -2.25],
                               rtol=1e-4, atol=1e-4)
    hit = img.abs().amax(0) > 1e-3
    assert sorted(map(tuple, hit.nonzero().tolist())) == [(21, 57), (36, 27)]
    # (the behind-camera point would be at (22, 55), the one closer than 1 m at (19, 60),
    # a transposed image would have the second point at (27, 36)).


def test_muses_events_land_in_the_right_channel_and_pixel(muses_item):
    ev = muses_item["inputs"]["events"]
    assert ev.dtype == torch.float32 and tuple(ev.shape) == (3, *NET_HW)
    counts = _raw(ev, EVENT_STATS)
    # The last 30 ms of the file: A has 3 positive (p = 1) and 2 negative (p = 0) events,
    # B one negative; C's event is 40 ms old.
    np.testing.assert_allclose(counts[:, PIX_A[0], PIX_A[1]].numpy(), [3.0, 2.0], atol=1e-4)
    np.testing.assert_allclose(counts[:, PIX_B[0], PIX_B[1]].numpy(), [0.0, 1.0], atol=1e-4)
    np.testing.assert_allclose(counts[:, PIX_C[0], PIX_C[1]].numpy(), [0.0, 0.0], atol=1e-4)
    hit = counts.abs().amax(0) > 1e-3
    assert sorted(map(tuple, hit.nonzero().tolist())) == [PIX_A, PIX_B]
    # MUSES' third channel is zero: one constant over the whole image.
    assert torch.all(ev[2] == ev[2, 0, 0])


def test_muses_event_window_length(muses_root):
    ds = MusesDataset(muses_root, "train", modalities=["events"], size_hw=NET_HW,
                      event_third="zero", event_window=0.05)
    counts = _raw(ds[0]["inputs"]["events"], EVENT_STATS)
    np.testing.assert_allclose(counts[:, PIX_C[0], PIX_C[1]].numpy(), [1.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(counts[:, PIX_A[0], PIX_A[1]].numpy(), [3.0, 2.0], atol=1e-4)


@pytest.mark.parametrize("rel", [
    "lidar/train/fog/night/REC0011_frame_000123_lidar.bin",
    "event_camera/train/fog/night/REC0011_frame_000123_event_camera.h5",
    "frame_camera/train/fog/night/REC0011_frame_000123_frame_camera.png",
    "gt_semantic/train/fog/night/REC0011_frame_000123_gt_labelTrainIds.png",
    "calib.json",
])
def test_muses_missing_file_is_named(muses_root, tmp_path, rel):
    root = tmp_path / "muses"
    shutil.copytree(muses_root, root)
    (root / rel).unlink()
    with pytest.raises(MusesError) as err:
        MusesDataset(root, "train", size_hw=NET_HW)
    assert err.value.path == root / rel
    assert "missing" in str(err.value)


def test_muses_wrong_label_encoding_is_refused(muses_root, tmp_path):
    # labelIds (Cityscapes car = 26) instead of labelTrainIds: refused, not read as class 26.
    root = tmp_path / "muses"
    shutil.copytree(muses_root, root)
    rel = "gt_semantic/train/fog/night/REC0011_frame_000123_gt_labelTrainIds.png"
    Image.fromarray(np.full(MUSES_HW, 26, np.uint8), "L").save(root / rel, format="PNG")
    ds = MusesDataset(root, "train", size_hw=NET_HW)
    with pytest.raises(MusesError) as err:
        ds[1]
    assert err.value.path == root / rel


REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
CITYSCAPES = REAL / "cityscapes_pseudo"
CS_STEM = "frankfurt_000000_000294"
# Cityscapes labelId -> trainId (cityscapesScripts' labels.py) for the ids in that image.
CS_LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 13: 4, 17: 5, 20: 7, 21: 8, 23: 10, 24: 11, 26: 13}


def test_muses_reads_a_real_cityscapes_train_id_png(tmp_path):
    """A real gtFine labelTrainIds PNG (MUSES uses the same 19 train ids) and its real
    camera image, placed in MUSES' layout (camera only: no calib.json needed)."""
    if not CITYSCAPES.is_dir():
        pytest.skip(f"real-data folder is missing: looked for {CITYSCAPES} "
                    "(shared/data/real beside the checkout)")
    root = tmp_path / "muses"
    stem = "REC0001_frame_000001"
    cam = root / f"frame_camera/val/clear/day/{stem}_frame_camera.png"
    gt = root / f"gt_semantic/val/clear/day/{stem}_gt_labelTrainIds.png"
    for dst, src in ((cam, "leftImg8bit"), (gt, "gtFine_labelTrainIds")):
        dst.parent.mkdir(parents=True)
        shutil.copyfile(CITYSCAPES / f"{CS_STEM}_{src}.png", dst)
    (root / "meta.json").write_text(json.dumps({stem: {
        "path_to_frame_camera": str(cam.relative_to(root)), "split": "val",
        "weather": "clear", "time_of_day": "day"}}))
    train_ids = np.asarray(Image.open(gt))
    label_ids = np.asarray(Image.open(CITYSCAPES / f"{CS_STEM}_gtFine_labelIds.png"))
    ds = MusesDataset(root, "val", modalities=["camera"], size_hw=train_ids.shape)
    label = ds[0]["label"].numpy()
    np.testing.assert_array_equal(label, train_ids)
    # The two real PNGs were downscaled separately and disagree on a few boundary pixels,
    # so each labelId is checked on the train id most of its pixels read as.
    for label_id, train_id in CS_LABEL_TO_TRAIN.items():
        assert np.mean(label[label_ids == label_id] == train_id) > 0.9, label_id
    assert np.mean(label[label_ids <= 6] == 255) > 0.9  # unlabelled, ego vehicle, ...
    # The labelIds file under the labelTrainIds name is refused (26 is no train id).
    shutil.copyfile(CITYSCAPES / f"{CS_STEM}_gtFine_labelIds.png", gt)
    with pytest.raises(MusesError, match="labelIds"):
        ds[0]


# =========================================================================== DELIVER

# DELIVER's images are 1042 x 1042 squares; the reader takes any size, so these are 24 x 24
# (square too), and the low-resolution event image of an ``eventlowres`` scene is 12 x 12.
DHW = (24, 24)
# (condition, split, scene, frame); scene names like MAP_10_point102, corner cases as a
# ``_<case>`` suffix of the scene name.
DELIVER_FRAMES = [
    ("cloud", "train", "MAP_10_point102", "045050"),          # the hand-checked frame
    ("cloud", "train", "MAP_10_point102", "045051"),
    ("fog", "train", "MAP_3_point7_motionblur", "000120"),
    ("night", "val", "MAP_5_point3", "001000"),
    ("rain", "val", "MAP_6_point1_eventlowres", "002000"),   # 12 x 12 event image
    ("sun", "test", "MAP_2_point9", "003000"),
]
# Stored label values (red channel of the semantic PNG) at hand-chosen pixels, and the train
# id each must become: stored 1..25 -> 0..24 in the class order, 0 and 255 -> 255.
STORED = {(0, 0): 1, (0, 1): 7, (0, 2): 25, (0, 3): 255, (1, 0): 13, (2, 20): 10}
TRAIN_ID = {(0, 0): 0, (0, 1): 6, (0, 2): 24, (0, 3): 255, (1, 0): 12, (2, 20): 9}
STORED_BACKGROUND = 0  # unlabelled
# The 25 classes in train-id order (sensors-and-formats.md, the official loader's CLASSES).
DOCUMENTED_CLASSES = (
    "Building", "Fence", "Other", "Pedestrian", "Pole", "RoadLine", "Road", "SideWalk",
    "Vegetation", "Cars", "Wall", "TrafficSign", "Sky", "Ground", "Bridge", "RailTrack",
    "GroundRail", "TrafficLight", "Static", "Dynamic", "Water", "Terrain", "TwoWheeler", "Bus",
    "Truck")


def _dpath(mod: str, cond: str, split: str, scene: str, frame: str) -> str:
    folder = {"rgb": "img", "depth": "hha", "event": "event", "lidar": "lidar",
              "semantic": "semantic"}[mod]
    return f"{folder}/{cond}/{split}/{scene}/{frame}_{mod}_front.png"


def _save(root: Path, rel: str, array: np.ndarray, mode: str) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(root / rel, format="PNG")


def make_deliver(root: Path) -> None:
    for cond, split, scene, frame in DELIVER_FRAMES:
        main = (cond, frame) == ("cloud", "045050")
        where = (cond, split, scene, frame)
        rgb = np.full((*DHW, 3), (10, 20, 30), np.uint8)
        hha = np.full((*DHW, 3), (1, 2, 3), np.uint8)
        depth = np.full(DHW, 250, np.uint8)            # depth/: NOT what the loader reads
        lidar = np.zeros(DHW, np.uint8)                # 1 channel
        event = np.zeros((*DHW, 4), np.uint8)          # RGBA
        event[..., 3] = 77
        stored = np.full(DHW, STORED_BACKGROUND, np.uint8)
        if main:
            rgb[2, 5] = (200, 100, 50)
            hha[3, 7] = (11, 22, 33)
            lidar[4, 9] = 204
            event[6, 1] = (255, 0, 51, 128)
            for rc, v in STORED.items():
                stored[rc] = v
        _save(root, _dpath("rgb", *where), rgb, "RGB")
        _save(root, _dpath("depth", *where), hha, "RGB")
        _save(root, f"depth/{cond}/{split}/{scene}/{frame}_depth_front.png", depth, "L")
        _save(root, _dpath("lidar", *where), lidar, "L")
        if scene.endswith("_eventlowres"):
            low = np.zeros((12, 12, 3), np.uint8)
            low[3, 4] = (255, 0, 0)
            _save(root, _dpath("event", *where), low, "RGB")
        else:
            _save(root, _dpath("event", *where), event, "RGBA")
        # Semantic PNG: the label in channel 0, other channels junk that must be ignored.
        sem = np.stack([stored, np.full(DHW, 9, np.uint8), np.full(DHW, 200, np.uint8)], -1)
        _save(root, _dpath("semantic", *where), sem, "RGB")


@pytest.fixture(scope="module")
def deliver_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("deliver_handmade")
    make_deliver(root)
    return root


def _deliver(root: Path, split: str, **kw) -> DeliverDataset:
    return DeliverDataset(root, split, size_hw=DHW, **kw)


def test_deliver_frame_and_split_discovery(deliver_root):
    names = {s: [f.name for f in _deliver(deliver_root, s).frames]
             for s in ("train", "val", "test")}
    assert names == {
        "train": ["cloud/train/MAP_10_point102/045050_rgb_front",
                  "cloud/train/MAP_10_point102/045051_rgb_front",
                  "fog/train/MAP_3_point7_motionblur/000120_rgb_front"],
        "val": ["night/val/MAP_5_point3/001000_rgb_front",
                "rain/val/MAP_6_point1_eventlowres/002000_rgb_front"],
        "test": ["sun/test/MAP_2_point9/003000_rgb_front"],
    }
    mb = _deliver(deliver_root, "train", conditions="motionblur")
    assert [f.name for f in mb.frames] == ["fog/train/MAP_3_point7_motionblur/000120_rgb_front"]
    assert mb[0]["condition"] == "fog-motionblur"
    assert _deliver(deliver_root, "train")[0]["condition"] == "cloud"
    assert len(_deliver(deliver_root, "train", cases="none")) == 2


def test_deliver_label_channel_0_and_id_mapping(deliver_root):
    item = _deliver(deliver_root, "train")[0]
    label = item["label"]
    assert label.dtype == torch.int64 and tuple(label.shape) == DHW
    for rc, tid in TRAIN_ID.items():
        assert int(label[rc]) == tid, rc
    assert int(label[10, 10]) == 255                       # stored 0 (unlabelled) -> ignore
    assert tuple(DeliverDataset.classes) == DOCUMENTED_CLASSES
    assert DOCUMENTED_CLASSES[TRAIN_ID[(0, 1)]] == "Road"      # stored 7
    assert DOCUMENTED_CLASSES[TRAIN_ID[(0, 2)]] == "Truck"     # stored 25
    assert DOCUMENTED_CLASSES[TRAIN_ID[(1, 0)]] == "Sky"       # stored 13
    assert DOCUMENTED_CLASSES[TRAIN_ID[(2, 20)]] == "Cars"     # stored 10
    assert int(label[20, 2]) == 255                         # not transposed


def test_deliver_modalities_read_as_documented(deliver_root):
    inputs = _deliver(deliver_root, "train")[0]["inputs"]
    for m in ("camera", "depth", "events", "lidar"):
        assert inputs[m].dtype == torch.float32 and tuple(inputs[m].shape) == (3, *DHW), m
    # camera: RGB order, ImageNet normalisation; row 2, column 5.
    rgb = _raw(inputs["camera"], IMAGENET)
    np.testing.assert_allclose(rgb[:, 2, 5].numpy(), np.array([200, 100, 50]) / 255, atol=1e-5)
    np.testing.assert_allclose(rgb[:, 5, 2].numpy(), np.array([10, 20, 30]) / 255, atol=1e-5)
    # depth: the hha/ image (not depth/), only divided by 255.
    np.testing.assert_allclose(inputs["depth"][:, 3, 7].numpy(), np.array([11, 22, 33]) / 255,
                               atol=1e-6)
    np.testing.assert_allclose(inputs["depth"][:, 0, 0].numpy(), np.array([1, 2, 3]) / 255,
                               atol=1e-6)
    # lidar: one channel repeated to three, / 255.
    np.testing.assert_allclose(inputs["lidar"][:, 4, 9].numpy(), [0.8, 0.8, 0.8], atol=1e-6)
    assert float(inputs["lidar"].abs().sum()) == pytest.approx(2.4, abs=1e-5)
    # events: RGBA loses alpha (77 / 128 nowhere), / 255.
    np.testing.assert_allclose(inputs["events"][:, 6, 1].numpy(), [1.0, 0.0, 0.2], atol=1e-6)
    assert float(inputs["events"].abs().sum()) == pytest.approx(1.2, abs=1e-5)


def test_deliver_low_resolution_events_upsampled_nearest(deliver_root):
    ds = _deliver(deliver_root, "val", conditions="eventlowres")
    ev = ds[0]["inputs"]["events"]
    assert tuple(ev.shape) == (3, *DHW)
    # Low-res pixel (row 3, col 4) -> the 2 x 2 block rows 6..7, cols 8..9, unblended.
    expected = torch.zeros(3, *DHW)
    expected[0, 6:8, 8:10] = 1.0
    torch.testing.assert_close(ev, expected)


@pytest.mark.parametrize("rel", [
    "lidar/cloud/train/MAP_10_point102/045051_lidar_front.png",
    "hha/cloud/train/MAP_10_point102/045051_depth_front.png",
    "event/cloud/train/MAP_10_point102/045051_event_front.png",
    "semantic/cloud/train/MAP_10_point102/045051_semantic_front.png",
])
def test_deliver_missing_file_is_named(deliver_root, tmp_path, rel):
    root = tmp_path / "deliver"
    shutil.copytree(deliver_root, root)
    (root / rel).unlink()
    with pytest.raises(DeliverError) as err:
        _deliver(root, "train")
    assert err.value.path == root / rel
    assert "missing" in str(err.value)
    # Without that modality the frame is complete again (the label is always needed).
    if not rel.startswith("semantic"):
        mod = {"lidar": "lidar", "hha": "depth", "event": "events"}[rel.split("/")[0]]
        mods = [m for m in ("camera", "depth", "events", "lidar") if m != mod]
        assert len(_deliver(root, "train", modalities=mods)) == 3
