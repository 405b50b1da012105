"""MUSES (Brödermann et al., ECCV 2024) read from its real on-disk layout.

Layout (the unzipped download; ``meta.json`` is the authority on which scenes exist)::

    <root>/meta.json        {scene name: {"path_to_frame_camera": ..., "split": ...,
                             "weather": ..., "time_of_day": ...,
                             "frame_camera_exposure_start_timestamp_us": ..., ...}, ...}
    <root>/calib.json       {"intrinsics": {"rgb": {"K"}, "event": {"K"}},
                             "extrinsics": {"lidar2rgb", "event2rgb", ...}}
    <root>/frame_camera/<split>/<weather>/<day|night>/<name>_frame_camera.png   8-bit RGB
    <root>/lidar/...                                  /<name>_lidar.bin         float64 N x 6
    <root>/event_camera/...                           /<name>_event_camera.h5   events/x y t p
    <root>/gt_semantic/...                            /<name>_gt_labelTrainIds.png  train ids

LiDAR columns: x (forward), y, z (up), intensity, ring, time (seconds, the camera's clock).
Event times are microseconds; the camera's time is the middle of its exposure
(``(start + end) / 2`` of the exposure timestamps, as the MUSES SDK's motion compensation
uses it). Raw data goes through :func:`anyseg_core.sensors.prepare_inputs` exactly as in the
ROS node: LiDAR and events are projected into the frame camera with the calibration. The
event window (``event_anchor`` of :class:`MusesDataset`): ``"last"`` (the default) takes the
``event_window`` seconds up to the file's last event, the MUSES SDK's rule; ``"camera"``
takes those up to the camera's time, as the ROS node does with live sensors.

Verified and assumed
--------------------
Verified against public code: the MUSES SDK (github.com/timbroed/MUSES: ``README.md``,
``processing/utils.py``, ``processing/event_camera_processing.py``) and CAFuser
(github.com/timbroed/CAFuser, which bundles the SDK's processing under
``cafuser/data/dataset_mappers/muses_sdk/`` and sets its options in ``cafuser/config.py``):

- the layout, file suffixes and meta.json keys above; the test split's ground truth is
  withheld (SDK README), so ``split="test"`` has no labels;
- LiDAR column 5 is seconds on the camera's clock: the SDK's motion compensation
  (``calculate_time_diff``) subtracts the exposure middle (µs / 1e6) from it;
- the SDK's event window: ``accumulate_events`` keeps ``t >= max(t) - 30000`` (µs) of the
  file, the last 30 ms, and never looks at the camera's time; the event image is the count
  of ``p == 1`` events, the count of ``p == 0`` events and zeros; events reach the frame
  camera through ``cv2.stereoRectify`` / ``undistortPoints`` with no distortion coefficients
  ("the data is already undistorted"); with ``CALIB_ZERO_DISPARITY`` the two rectifying
  rotations reduce that to ``K_rgb R K_event^-1`` (R the rotation of ``event2rgb``), the
  rotation homography used here (translation ignored); the files need h5py and hdf5plugin
  (the SDK imports both);
- CAFuser renders every modality at 1920 x 1080 with 2 x 2 (LiDAR) and 3 x 3 (event)
  dilation by default, and carries the per-channel statistics of
  :data:`anyseg_core.modalities.NORMALIZATION` (LiDAR, events): they describe SDK-window
  event images and 1920 x 1080 renderings, not this project's network-size renderings.

Assumed, as no public code pins it down (none of it has been run on the real files):

- the event clock: that ``events/t`` is on the camera's microsecond clock. The SDK never
  compares the two. Event times more than 1 s from the camera's are taken to be on another
  clock and shifted so that the last event falls on the camera's time (``events_shifted_s``);
- the span of an event file around the camera's time, which no public code states. With
  ``event_anchor="last"`` it does not matter; ``"camera"`` relies on the files reaching the
  camera's time (where a file ends near it, both windows agree);
- ``t_offset``: the SDK reads none; a scalar ``t_offset`` dataset, as in DSEC files, is
  added to ``events/t`` when present (a constant, so the ``"last"`` window is the same);
- the compression filter of the ``.h5`` files (any filter hdf5plugin registers is read);
- the event camera's size: 1280 x 720 (the paper's "HD event camera"; the SDK never states
  it, calib.json has no size), used only to check pixel coordinates and as ``events_hw``;
- lens distortion: ignored, as in the SDK, which passes no coefficients to OpenCV and says
  the data is already undistorted;
- the window's edge: the SDK keeps an event exactly 30 ms before the last one
  (``t >= max - 30 ms``), the renderer here does not (``(end - window, end]``): at most
  the events of that one microsecond differ.

:func:`read_frame` gives one scene's raw data as a :class:`~anyseg_core.sensors.RawFrame`
(with real time stamps and the calibration in ``meta``); :class:`MusesDataset` gives
training/evaluation items like :class:`~anyseg_core.data.synthetic.SyntheticDataset`. The
``write_*`` functions write the same formats (used by the synthetic exporter and tests).
Every problem with a file raises :class:`MusesError` naming the file and what is wrong.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
from torch.utils.data import Dataset

from ..modalities import (CAMERA, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, EVENTS, IGNORE_INDEX,
                          LIDAR, check_modalities)
from ..sensors import Events, RawFrame, prepare_inputs
from .readers import DataFileError, SkipBrokenItems, as_set, open_png

SPLITS = ("train", "val", "test")
WEATHERS = ("clear", "rain", "snow", "fog")
TIMES_OF_DAY = ("day", "night")
#: What read_frame can load: the three sensors MUSES shares with AnySeg, and the label.
LABEL = "label"
#: Folder and file-name suffix of each part, and its path key in meta.json (the real
#: meta.json has none for the label: its path is derived from the frame camera's).
FOLDERS = {CAMERA: "frame_camera", LIDAR: "lidar", EVENTS: "event_camera", LABEL: "gt_semantic"}
SUFFIXES = {CAMERA: "_frame_camera.png", LIDAR: "_lidar.bin", EVENTS: "_event_camera.h5",
            LABEL: "_gt_labelTrainIds.png"}
META_KEYS = {CAMERA: "path_to_frame_camera", LIDAR: "path_to_lidar",
             EVENTS: "path_to_event_camera", LABEL: "path_to_gt_semantic"}
EXPOSURE_KEYS = ("frame_camera_exposure_start_timestamp_us",
                 "frame_camera_exposure_end_timestamp_us")
LIDAR_COLUMNS = ("x", "y", "z", "intensity", "ring", "time")
EVENT_DATASETS = ("events/x", "events/y", "events/t", "events/p")
#: Sizes used when neither the files nor calib.json say (the SDK's calib.json has only the
#: matrices): the 1920x1080 frame camera, and an "HD event camera" (the paper's words),
#: taken to be 1280x720 -- an assumption, used for nothing but ``events_hw``.
DEFAULT_IMAGE_HW = (1080, 1920)
DEFAULT_EVENTS_HW = (720, 1280)
#: Where the event window ends: "last" = the file's last event (the MUSES SDK's
#: accumulate_events, whose windows CAFuser's event statistics describe), "camera" = the
#: middle of the frame camera's exposure (as the ROS node anchors it on live sensors).
EVENT_ANCHORS = ("last", "camera")
#: Why a test-split label is missing (the MUSES SDK README says so).
TEST_LABELS_WITHHELD = ("MUSES withholds the ground truth of its test split (it is scored on "
                        "the MUSES benchmark server), and training and evaluation need labels: "
                        "use split train or val (muses_to_bag converts test scenes without "
                        "labels)")
#: Event times further than this from the camera's time are taken to be on another clock.
_CLOCK_TOLERANCE_S = 1.0
_VALID_LABELS = np.zeros(256, bool)
_VALID_LABELS[list(range(len(CITYSCAPES_CLASSES))) + [IGNORE_INDEX]] = True


class MusesError(DataFileError):
    """A MUSES file (or meta.json entry) that is missing or cannot be used; ``path`` names it."""


# --------------------------------------------------------------------------- conditions


def parse_condition(text: str) -> tuple[Optional[str], Optional[str]]:
    """``"fog-night"`` -> ("fog", "night"); ``"fog"`` -> ("fog", None) (any time of day);
    ``"night"`` -> (None, "night"). Raises ValueError on anything else (MUSES has no
    exposure corner cases)."""
    weather = time = None
    for part in str(text).strip().lower().replace("_", "-").split("-"):
        if part in WEATHERS and weather is None:
            weather = part
        elif part in TIMES_OF_DAY and time is None:
            time = part
        elif part:
            raise ValueError(f"cannot parse MUSES condition {text!r}: {part!r} is not a weather "
                             f"{list(WEATHERS)} or a time of day {list(TIMES_OF_DAY)} "
                             "(or it repeats one)")
    if weather is None and time is None:
        raise ValueError(f"empty MUSES condition {text!r}")
    return weather, time


# --------------------------------------------------------------------------- scenes


@dataclass(frozen=True)
class MusesScene:
    """One annotated MUSES scene: its name, split, condition and meta.json entry."""

    root: Path
    name: str
    split: str
    weather: str
    time_of_day: str
    entry: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def condition(self) -> str:
        return f"{self.weather}-{self.time_of_day}"

    def relpath(self, part: str) -> str:
        """Path of ``part`` (camera, lidar, events, label) relative to the root: meta.json's
        ``path_to_*`` when it has one, else the layout's (the label's is derived from the
        frame camera's path, as meta.json has no key for it)."""
        if part not in FOLDERS:
            raise ValueError(f"unknown MUSES part {part!r}; expected one of {list(FOLDERS)}")
        rel = self.entry.get(META_KEYS[part])
        if rel:
            return str(rel)
        cam = self.entry.get(META_KEYS[CAMERA])
        if part != CAMERA and cam and str(cam).endswith(SUFFIXES[CAMERA]):
            parts = str(cam).split("/")
            if parts[0] == FOLDERS[CAMERA]:
                parts[0] = FOLDERS[part]
                return "/".join(parts)[:-len(SUFFIXES[CAMERA])] + SUFFIXES[part]
        return layout_path(part, self.split, self.weather, self.time_of_day, self.name)

    def path(self, part: str) -> Path:
        return self.root / self.relpath(part)

    @property
    def t_cam(self) -> Optional[float]:
        """Mid-exposure time of the frame camera (UNIX seconds), or None if meta lacks it."""
        us = exposure_us(self.entry)
        return None if us is None else (us[0] + us[1]) / 2 / 1e6


def layout_path(part: str, split: str, weather: str, time_of_day: str, name: str) -> str:
    """``<folder>/<split>/<weather>/<day|night>/<name><suffix>`` (relative to the root)."""
    return f"{FOLDERS[part]}/{split}/{weather}/{time_of_day}/{name}{SUFFIXES[part]}"


def exposure_us(entry: Mapping[str, Any]) -> Optional[tuple[int, int]]:
    """(start, end) of the frame camera's exposure in microseconds, or None when absent."""
    if not all(k in entry for k in EXPOSURE_KEYS):
        return None
    return int(entry[EXPOSURE_KEYS[0]]), int(entry[EXPOSURE_KEYS[1]])


def load_meta(root: Path | str) -> dict[str, dict]:
    """meta.json of ``root``: scene name -> entry."""
    path = Path(root) / "meta.json"
    data = _read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise MusesError(path, "expected an object of scene name -> object (the MUSES "
                               "meta.json), got something else")
    return data


def list_scenes(root: Path | str, split: Optional[str | Iterable[str]] = None,
                weather: Optional[str | Iterable[str]] = None,
                time_of_day: Optional[str | Iterable[str]] = None,
                conditions: Optional[Iterable[str]] = None,
                skipped: Optional[list] = None) -> list[MusesScene]:
    """The scenes of meta.json that pass every filter, sorted by name.

    split / weather / time_of_day: a name or a collection of names (None = all).
    conditions: names such as ``fog-night``, ``rain`` (any time) or ``night`` (any weather);
    a scene passes when it matches one of them. An entry with a missing or unknown split,
    weather or time of day raises :class:`MusesError`, or is appended to ``skipped`` as
    ``(name, path, problem)`` when a list is given."""
    root = Path(root)
    if not root.is_dir():
        raise MusesError(root, "the MUSES root folder does not exist")
    splits = as_set(split, SPLITS, "MUSES split")
    weathers = as_set(weather, WEATHERS, "MUSES weather")
    times = as_set(time_of_day, TIMES_OF_DAY, "MUSES time of day")
    patterns = [parse_condition(c) for c in conditions] if conditions else None
    out = []
    for name, entry in sorted(load_meta(root).items()):
        values = [entry.get(k) for k in ("split", "weather", "time_of_day")]
        bad = [f"{k}={v!r}" for k, v, allowed in zip(("split", "weather", "time_of_day"), values,
                                                      (SPLITS, WEATHERS, TIMES_OF_DAY))
               if v not in allowed]
        if bad:
            err = MusesError(root / "meta.json", f"scene {name!r} has {', '.join(bad)}")
            if skipped is None:
                raise err
            skipped.append((name, err.path, err.problem))
            continue
        s, w, t = values
        if (splits and s not in splits) or (weathers and w not in weathers) \
                or (times and t not in times):
            continue
        if patterns and not any((pw in (None, w)) and (pt in (None, t)) for pw, pt in patterns):
            continue
        out.append(MusesScene(root, name, s, w, t, entry))
    return out


# --------------------------------------------------------------------------- calibration


@dataclass
class MusesCalibration:
    """calib.json as the sensors module wants it. Sizes are (height, width) or None when
    calib.json does not say (the real one does not; the synthetic export does)."""

    path: Path
    K: np.ndarray
    events_K: Optional[np.ndarray] = None
    T_cam_lidar: Optional[np.ndarray] = None
    T_cam_events: Optional[np.ndarray] = None
    image_hw: Optional[tuple[int, int]] = None
    events_hw: Optional[tuple[int, int]] = None
    raw: dict = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict:
        return {"K": self.K, "image_hw": self.image_hw, "T_cam_lidar": self.T_cam_lidar,
                "events_K": self.events_K, "events_hw": self.events_hw,
                "T_cam_events": self.T_cam_events}


def load_calibration(root: Path | str) -> MusesCalibration:
    """Read and check ``<root>/calib.json``: ``intrinsics.rgb.K`` (required),
    ``intrinsics.event.K``, ``extrinsics.lidar2rgb`` (= T_cam_lidar) and
    ``extrinsics.event2rgb`` (= T_cam_events), optional ``height``/``width`` per camera."""
    path = Path(root) / "calib.json"
    raw = _read_json(path)
    intr = raw.get("intrinsics") if isinstance(raw, dict) else None
    extr = raw.get("extrinsics", {}) if isinstance(raw, dict) else None
    if not isinstance(intr, dict) or not isinstance(extr, dict):
        raise MusesError(path, "expected an object with 'intrinsics' and 'extrinsics' "
                               "(the MUSES calib.json)")

    def camera(key: str, required: bool):
        cam = intr.get(key)
        if cam is None or "K" not in cam:
            if required:
                raise MusesError(path, f"has no intrinsics.{key}.K")
            return None, None
        K = _matrix(path, f"intrinsics.{key}.K", cam["K"], (3, 3))
        if not (K[0, 0] > 0 and K[1, 1] > 0 and np.allclose(K[2], (0, 0, 1), atol=1e-6)):
            raise MusesError(path, f"intrinsics.{key}.K is not a camera matrix "
                                   f"(fx, fy > 0, last row 0 0 1): {K.tolist()}")
        hw = None
        if "height" in cam and "width" in cam:
            hw = (int(cam["height"]), int(cam["width"]))
        return K, hw

    def pose(key: str):
        if key not in extr:
            return None
        T = _matrix(path, f"extrinsics.{key}", extr[key], (4, 4))
        R = T[:3, :3]
        if not (np.allclose(T[3], (0, 0, 0, 1), atol=1e-6)
                and np.allclose(R @ R.T, np.eye(3), atol=1e-3)):
            raise MusesError(path, f"extrinsics.{key} is not a rigid transform (rotation + "
                                   f"translation, last row 0 0 0 1): {T.tolist()}")
        return T

    K, image_hw = camera("rgb", True)
    events_K, events_hw = camera("event", False)
    return MusesCalibration(path, K, events_K, pose("lidar2rgb"), pose("event2rgb"), image_hw,
                            events_hw, raw)


def _matrix(path: Path, key: str, value: Any, shape: tuple[int, int]) -> np.ndarray:
    try:
        M = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise MusesError(path, f"{key} is not a numeric matrix") from None
    if M.shape != shape or not np.isfinite(M).all():
        raise MusesError(path, f"{key} must be a finite {shape[0]}x{shape[1]} matrix, got "
                               f"shape {M.shape}")
    return M


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise MusesError(path, "missing")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MusesError(path, f"not readable JSON ({err})") from None


# --------------------------------------------------------------------------- file readers


def _need(path: Path) -> None:
    if not path.is_file():
        raise MusesError(path, "missing")


def png_size(path: Path) -> tuple[int, int]:
    """(height, width) of a PNG from its header only."""
    from PIL import Image
    _need(path)
    try:
        with Image.open(path) as img:
            return img.size[1], img.size[0]
    except Exception as err:
        raise MusesError(path, f"not a readable PNG ({type(err).__name__}: {err})") from None


def read_camera(path: Path | str) -> np.ndarray:
    """Frame camera PNG -> H x W x 3 uint8 RGB (an alpha channel is dropped)."""
    path = Path(path)
    img = open_png(path, MusesError)
    if img.mode not in ("RGB", "RGBA"):
        raise MusesError(path, f"expected an 8-bit RGB PNG, got PIL mode {img.mode}")
    return np.asarray(img.convert("RGB") if img.mode == "RGBA" else img, dtype=np.uint8)


def read_label(path: Path | str) -> np.ndarray:
    """``*_gt_labelTrainIds.png`` -> H x W uint8 train ids (0..18, 255 = ignore)."""
    path = Path(path)
    img = open_png(path, MusesError)
    if img.mode not in ("L", "P"):
        raise MusesError(path, f"expected an 8-bit single-channel PNG of train ids, got PIL "
                               f"mode {img.mode}")
    label = np.asarray(img, dtype=np.uint8)
    counts = np.bincount(label.ravel(), minlength=256)
    bad = np.flatnonzero((counts > 0) & ~_VALID_LABELS)
    if bad.size:
        raise MusesError(path, f"has values {bad[:8].tolist()} that are not train ids (0..18 "
                               "or 255): is it a labelIds image instead of labelTrainIds?")
    return label


def read_lidar(path: Path | str) -> np.ndarray:
    """``*_lidar.bin`` -> N x 6 float64 (x, y, z, intensity, ring, time in seconds)."""
    path = Path(path)
    _need(path)
    size = path.stat().st_size
    row = 8 * len(LIDAR_COLUMNS)
    if size % row:
        raise MusesError(path, f"size {size} bytes is not a multiple of {row} (rows of "
                               f"{len(LIDAR_COLUMNS)} float64: {' '.join(LIDAR_COLUMNS)}); "
                               "the file is truncated or not a MUSES LiDAR sweep")
    try:
        pts = np.fromfile(path, dtype="<f8")
    except OSError as err:
        raise MusesError(path, f"cannot be read ({err})") from None
    return pts.reshape(-1, len(LIDAR_COLUMNS))


def read_events(path: Path | str, events_hw: Optional[tuple[int, int]] = None) -> Events:
    """``*_event_camera.h5`` -> :class:`Events` with times in seconds (float64).

    Datasets ``events/x``, ``events/y`` (pixels), ``events/t`` (microseconds, plus a scalar
    ``t_offset`` when the file has one, as in DSEC-style files), ``events/p`` (1 positive,
    0 negative). Needs h5py and hdf5plugin (the files are compressed with a filter plugin).
    ``events_hw``: when given, coordinates must lie inside it."""
    path = Path(path)
    _need(path)
    try:
        import h5py
        import hdf5plugin  # noqa: F401  (registers the compression filters)
    except ImportError as err:
        raise ImportError(f"reading MUSES events ({path}) needs h5py and hdf5plugin: "
                          f"pip install h5py hdf5plugin ({err})") from None
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in EVENT_DATASETS if k not in f]
            if missing:
                found = []
                f.visit(found.append)
                raise MusesError(path, f"has no dataset {', '.join(missing)} (found: "
                                       f"{', '.join(found) or 'nothing'})")
            x, y, t, p = (f[k][()] for k in EVENT_DATASETS)
            offset = f["t_offset"][()] if "t_offset" in f else 0
    except MusesError:
        raise
    except Exception as err:  # h5py: OSError for non-HDF5 / truncated / filter failures
        raise MusesError(path, f"not a readable HDF5 event file ({type(err).__name__}: "
                               f"{err})") from None
    arrays = dict(zip("xytp", (x, y, t, p)))
    for k, a in arrays.items():
        if a.ndim != 1 or a.dtype.kind not in ("b", "i", "u", "f"):
            raise MusesError(path, f"events/{k} must be a 1-D numeric array, got shape "
                                   f"{a.shape} dtype {a.dtype}")
    if not len(x) == len(y) == len(t) == len(p):
        raise MusesError(path, f"events/x, y, t, p differ in length: {len(x)}, {len(y)}, "
                               f"{len(t)}, {len(p)}")
    for k in "xyp":
        if arrays[k].dtype.kind == "f":
            raise MusesError(path, f"events/{k} must be integers, got {arrays[k].dtype}")
    if len(x) and (x.min() < 0 or y.min() < 0):
        raise MusesError(path, "has negative pixel coordinates")
    if len(x) and events_hw is not None and (x.max() >= events_hw[1] or y.max() >= events_hw[0]):
        raise MusesError(path, f"has pixels up to x={int(x.max())}, y={int(y.max())} outside "
                               f"the event camera's {events_hw[1]}x{events_hw[0]}")
    t_s = (t.astype(np.float64) + float(np.asarray(offset))) / 1e6
    if len(t_s) and not np.isfinite(t_s).all():
        raise MusesError(path, "events/t has non-finite times")
    return Events(x=x, y=y, t=t_s, p=p)


# --------------------------------------------------------------------------- one scene


def read_frame(scene: MusesScene, calib: Optional[MusesCalibration] = None,
               modalities: Optional[Iterable[str]] = None, label: bool = True) -> RawFrame:
    """The raw data of ``scene`` as a :class:`RawFrame`, in the sensors' own units and times.

    modalities: which of camera / lidar / events to read; a requested one whose file is
    missing raises :class:`MusesError`. None: whichever of them are on disk. label: read
    the ground truth when it is on disk (never required here). ``calib``: defaults to the
    scene root's calib.json (required for LiDAR and events, read when present otherwise).

    ``t_cam`` is the middle of the frame camera's exposure (0 when meta.json lacks the
    exposure stamps; the event window then ends at the last event, as in the MUSES SDK).
    Events stay whole (every event in the file); :func:`prepare_inputs` takes the window.
    Should the event times not lie on the camera's clock (more than 1 s away from
    ``t_cam``), they are shifted so that the last event falls on ``t_cam`` -- the SDK's rule
    -- and ``meta["stamps"]["events_shifted_s"]`` says by how much.

    ``meta``: name, split, weather, time_of_day, condition, paths (what was read),
    stamps (camera, exposure_start, exposure_end, lidar = sweep centre, lidar_first,
    lidar_last, events_first, events_last; seconds or None), calib (K, image_hw,
    T_cam_lidar, events_K, events_hw, T_cam_events) and entry (the meta.json entry).
    """
    if modalities is None:
        mods = [m for m in (CAMERA, LIDAR, EVENTS) if scene.path(m).is_file()]
    else:
        mods = list(modalities)
        unknown = [m for m in mods if m not in (CAMERA, LIDAR, EVENTS)]
        if unknown:
            raise ValueError(f"MUSES has no modality {unknown}; it has camera, lidar and events")
    if calib is None and (LIDAR in mods or EVENTS in mods
                          or (scene.root / "calib.json").is_file()):
        calib = load_calibration(scene.root)
    paths: dict[str, str] = {}
    camera = lab = lidar = events = None
    if CAMERA in mods:
        camera = read_camera(scene.path(CAMERA))
        paths[CAMERA] = str(scene.path(CAMERA))
    if label and scene.path(LABEL).is_file():
        lab = read_label(scene.path(LABEL))
        paths[LABEL] = str(scene.path(LABEL))
    image_hw = _image_hw(scene, camera, lab, calib)
    if LIDAR in mods:
        if calib.T_cam_lidar is None:
            raise MusesError(calib.path, "has no extrinsics.lidar2rgb, which the LiDAR needs")
        lidar = read_lidar(scene.path(LIDAR))
        paths[LIDAR] = str(scene.path(LIDAR))
    if EVENTS in mods:
        if calib.events_K is None:
            raise MusesError(calib.path, "has no intrinsics.event.K, which the events need")
        events = read_events(scene.path(EVENTS), calib.events_hw)
        paths[EVENTS] = str(scene.path(EVENTS))

    exposure = exposure_us(scene.entry)
    t_cam = scene.t_cam or 0.0
    stamps: dict[str, Any] = {
        "camera": scene.t_cam,
        "exposure_start": None if exposure is None else exposure[0] / 1e6,
        "exposure_end": None if exposure is None else exposure[1] / 1e6,
        "lidar": None, "lidar_first": None, "lidar_last": None,
        "events_first": None, "events_last": None, "events_shifted_s": 0.0,
    }
    if lidar is not None and len(lidar):
        times = lidar[:, 5][np.isfinite(lidar[:, 5])]
        if times.size:
            stamps.update(lidar_first=float(times.min()), lidar_last=float(times.max()),
                          lidar=float(times.min() + times.max()) / 2)
    if events is not None and len(events):
        first, last = float(events.t.min()), float(events.t.max())
        if t_cam and (last < t_cam - _CLOCK_TOLERANCE_S or first > t_cam + _CLOCK_TOLERANCE_S):
            shift = t_cam - last
            events = Events(events.x, events.y, events.t + shift, events.p)
            first, last = first + shift, last + shift
            stamps["events_shifted_s"] = shift
        stamps.update(events_first=first, events_last=last)

    events_hw = None
    if calib is not None and calib.events_K is not None:
        events_hw = calib.events_hw or DEFAULT_EVENTS_HW
    calib_meta = calib.as_dict() if calib is not None else {}
    calib_meta.update(image_hw=image_hw, events_hw=events_hw)
    return RawFrame(
        image_hw=image_hw, K=None if calib is None else calib.K, t_cam=t_cam,
        camera=camera, camera_encoding="rgb8",
        lidar=lidar, T_cam_lidar=None if calib is None else calib.T_cam_lidar,
        events=events, events_K=None if calib is None else calib.events_K, events_hw=events_hw,
        T_cam_events=None if calib is None else calib.T_cam_events,
        label=lab,
        meta={"dataset": "muses", "name": scene.name, "split": scene.split,
              "weather": scene.weather, "time_of_day": scene.time_of_day,
              "condition": scene.condition, "paths": paths, "stamps": stamps,
              "calib": calib_meta, "entry": dict(scene.entry)})


def _image_hw(scene: MusesScene, camera: Optional[np.ndarray], label: Optional[np.ndarray],
              calib: Optional[MusesCalibration]) -> tuple[int, int]:
    """The frame camera's (H, W): from the image, else the label, else a PNG header, else
    calib.json, else 1080 x 1920; the camera image and the label must agree."""
    hw = None
    if camera is not None:
        hw = camera.shape[:2]
    if label is not None:
        if hw is not None and tuple(label.shape) != tuple(hw):
            raise MusesError(scene.path(LABEL), f"label is {label.shape[1]}x{label.shape[0]} "
                                                f"but the frame camera image "
                                                f"{scene.path(CAMERA)} is {hw[1]}x{hw[0]}")
        hw = hw or label.shape
    if hw is None:
        for part in (CAMERA, LABEL):
            if scene.path(part).is_file():
                hw = png_size(scene.path(part))
                break
    if hw is None:
        hw = (calib.image_hw if calib is not None else None) or DEFAULT_IMAGE_HW
    hw = (int(hw[0]), int(hw[1]))
    if calib is not None and calib.image_hw is not None and tuple(calib.image_hw) != hw:
        raise MusesError(calib.path, f"says the frame camera is {calib.image_hw[1]}x"
                                     f"{calib.image_hw[0]} but scene {scene.name} has "
                                     f"{hw[1]}x{hw[0]} images: K would not fit them")
    return hw


def check_event_anchor(anchor: str) -> str:
    """``anchor`` when it is one of :data:`EVENT_ANCHORS`, else a ValueError naming them."""
    if anchor not in EVENT_ANCHORS:
        raise ValueError(f"unknown MUSES event anchor {anchor!r}; expected one of "
                         f"{list(EVENT_ANCHORS)}")
    return anchor


def anchor_events(frame: RawFrame, anchor: str = "last") -> RawFrame:
    """``frame`` with its event window placed for :func:`prepare_inputs`, which ends the
    window at ``t_cam``: ``"last"`` returns a copy whose ``t_cam`` is the last event's time
    (the MUSES SDK's window, the latest ``event_window`` seconds of the file); ``"camera"``
    returns ``frame`` itself (the window ends at the middle of the camera's exposure). The
    copy shares every array with ``frame``; its ``t_cam`` serves the event window only."""
    check_event_anchor(anchor)
    if anchor == "camera" or frame.events is None or not len(frame.events):
        return frame
    return replace(frame, t_cam=float(np.max(np.asarray(frame.events.t))))


# --------------------------------------------------------------------------- dataset


class MusesDataset(SkipBrokenItems, Dataset):
    """MUSES scenes as network inputs, through :func:`prepare_inputs` like the ROS node.

    Items are dicts like :class:`~anyseg_core.data.synthetic.SyntheticDataset`'s: ``inputs``
    (modality -> normalised float32 [3, H, W]), ``label`` (int64 [H, W], 255 = ignore),
    ``condition`` (``weather-time_of_day``), ``index``, ``name`` and ``raw`` (the
    :class:`RawFrame`) when ``return_raw``.

    root: the MUSES folder. split: train / val / test. modalities: among camera, events,
    lidar; every scene must have their files and a label (the test split has none: MUSES
    withholds them, and the error says so). weather / time_of_day: a name or a list of
    names; conditions: names such as ``fog-night``, ``rain``, ``night`` (a scene passes when
    it matches any). event_window: seconds of events rendered. event_anchor: where they end,
    ``"last"`` (default: the file's last event, the MUSES SDK's window, which the event
    normalisation statistics come from) or ``"camera"`` (the middle of the camera's
    exposure, as the ROS node renders live events); see :func:`anchor_events`.

    Missing files are found when the dataset is built (one stat per file, and a size check
    of the LiDAR files); a corrupt file when its item is read. Either raises
    :class:`MusesError` naming the file, or with ``skip_broken`` the scene is left out
    (built) or replaced by the next readable one (read) and recorded once in ``skipped`` as
    ``(name, path, problem)``; ``num_skipped`` counts them (per process: DataLoader workers
    keep their own). ``verify()`` reads every scene once to find corrupt files up front.

    augment: optional ``callable(inputs, label, generator) -> (inputs, label)`` (e.g.
    :class:`~anyseg_core.data.transforms.JointAugment`) applied with a generator seeded by
    (seed, index); the training script augments in its own wrapper and passes none.
    """

    classes = CITYSCAPES_CLASSES
    palette = CITYSCAPES_PALETTE

    def __init__(self, root: Path | str, split: str = "train",
                 modalities: Iterable[str] = (CAMERA, EVENTS, LIDAR),
                 size_hw: Sequence[int] = (288, 512),
                 weather: Optional[str | Iterable[str]] = None,
                 time_of_day: Optional[str | Iterable[str]] = None,
                 conditions: Optional[Iterable[str]] = None, skip_broken: bool = False,
                 event_window: float = 0.03, event_anchor: str = "last",
                 lidar_dilate: int = 0, lidar_min_range: float = 1.0,
                 event_third: str = "recency", augment: Optional[Callable] = None,
                 seed: int = 0, return_raw: bool = False,
                 lidar_intensity: str = "raw") -> None:
        self.root = Path(root)
        self.split = split
        self.modalities = check_modalities(modalities)
        other = [m for m in self.modalities if m not in (CAMERA, EVENTS, LIDAR)]
        if other:
            raise ValueError(f"MUSES has no {other} modality; it has camera, events and lidar")
        if split not in SPLITS:
            raise ValueError(f"unknown MUSES split {split!r}; expected one of {list(SPLITS)}")
        self.event_anchor = check_event_anchor(event_anchor)
        self.size_hw = (int(size_hw[0]), int(size_hw[1]))
        self.skip_broken = skip_broken
        self.event_window, self.lidar_dilate = event_window, lidar_dilate
        self.lidar_min_range, self.event_third = lidar_min_range, event_third
        self.lidar_intensity = lidar_intensity
        self.augment, self.seed, self.return_raw = augment, int(seed), return_raw
        self.skipped: list[tuple[str, Path, str]] = []
        self.filters = {"split": split, "weather": weather, "time_of_day": time_of_day,
                        "conditions": list(conditions) if conditions else None}
        scenes = list_scenes(self.root, split, weather, time_of_day, conditions,
                             skipped=self.skipped if skip_broken else None)
        needs_calib = EVENTS in self.modalities or LIDAR in self.modalities
        self.calib = (load_calibration(self.root)
                      if needs_calib or (self.root / "calib.json").is_file() else None)
        self.scenes = self._usable(scenes, [*self.modalities, LABEL])

    error, dataset_name, unit = MusesError, "MUSES", "scene"

    def _items(self) -> list[MusesScene]:
        return self.scenes

    def _part_path(self, scene: MusesScene, part: str) -> Path:
        return scene.path(part)

    def _folder(self, part: str) -> Path:
        return self.root / FOLDERS[part]

    def _file_problem(self, part: str, path: Path) -> Optional[str]:
        size = path.stat().st_size
        if part == LIDAR and size % (8 * len(LIDAR_COLUMNS)):
            return f"size {size} bytes is not a multiple of 48 (rows of 6 float64): truncated"
        return None

    def _missing_hint(self, part: str) -> str:
        if part == LABEL and self.split == "test":
            return f" ({TEST_LABELS_WITHHELD})"
        return super()._missing_hint(part)

    def _empty_message(self, n_before: int) -> str:
        available: dict[str, int] = {}
        for entry in load_meta(self.root).values():
            key = f"{entry.get('split')}/{entry.get('weather')}-{entry.get('time_of_day')}"
            available[key] = available.get(key, 0) + 1
        listing = ", ".join(f"{k} {v}" for k, v in sorted(available.items())) or "none"
        why = "after skipping broken ones" if n_before else "match the filters"
        withheld = self.split == "test" and any(str(path).endswith(SUFFIXES[LABEL])
                                                for _, path, _ in self.skipped)
        return (f"no MUSES scenes {why} in {self.root} ({self.filters}); meta.json has: "
                f"{listing}" + (f". {TEST_LABELS_WITHHELD}" if withheld else ""))

    def raw(self, index: int) -> RawFrame:
        """The :class:`RawFrame` of item ``index`` (the requested modalities and the label)."""
        return read_frame(self.scenes[index], self.calib, self.modalities, label=True)

    def _item(self, i: int, index: int) -> dict:
        frame = self.raw(i)
        if frame.label is None:
            raise MusesError(self.scenes[i].path(LABEL), "missing" + self._missing_hint(LABEL))
        inputs = prepare_inputs(anchor_events(frame, self.event_anchor), self.size_hw,
                                self.modalities, event_window=self.event_window,
                                lidar_dilate=self.lidar_dilate,
                                lidar_min_range=self.lidar_min_range,
                                event_third=self.event_third,
                                lidar_intensity=self.lidar_intensity)
        return self._training_item(inputs, frame.label, index, frame.meta["condition"],
                                   frame.meta["name"], frame)

    def _read(self, scene: MusesScene) -> None:
        if read_frame(scene, self.calib, self.modalities, label=True).label is None:
            raise MusesError(scene.path(LABEL), "missing" + self._missing_hint(LABEL))


# --------------------------------------------------------------------------- writers


def write_camera(path: Path | str, rgb: np.ndarray) -> None:
    """H x W x 3 uint8 RGB -> 8-bit RGB PNG."""
    from PIL import Image
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"a frame camera image must be H x W x 3 uint8, got {rgb.shape} "
                         f"{rgb.dtype}")
    _parent(path)
    Image.fromarray(rgb, "RGB").save(path, format="PNG")


def write_label(path: Path | str, label: np.ndarray) -> None:
    """H x W train ids -> 8-bit grayscale PNG (``*_gt_labelTrainIds.png``)."""
    from PIL import Image
    label = np.asarray(label)
    ok = label.ndim == 2 and label.dtype.kind in ("i", "u")
    ok = ok and (label.size == 0 or (label.min() >= 0 and label.max() <= 255))
    if not ok or not _VALID_LABELS[label.astype(np.uint8)].all():
        raise ValueError("a label must be H x W train ids (0..18, 255 = ignore)")
    _parent(path)
    Image.fromarray(label.astype(np.uint8), "L").save(path, format="PNG")


def write_lidar(path: Path | str, points: np.ndarray) -> None:
    """N x 6 (x, y, z, intensity, ring, time in seconds) -> little-endian float64 ``.bin``."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != len(LIDAR_COLUMNS):
        raise ValueError(f"LiDAR points must be N x 6 ({' '.join(LIDAR_COLUMNS)}), got "
                         f"{points.shape}")
    _parent(path)
    np.ascontiguousarray(points, dtype="<f8").tofile(path)


def write_events(path: Path | str, x: np.ndarray, y: np.ndarray, t_us: np.ndarray,
                 p: np.ndarray) -> None:
    """Events -> HDF5 ``events/x`` (uint16), ``events/y`` (uint16), ``events/t`` (int64
    microseconds, the camera's clock), ``events/p`` (uint8 1/0), each compressed with
    hdf5plugin's Zstd filter."""
    import h5py
    import hdf5plugin
    t_us = np.asarray(t_us)
    if t_us.dtype.kind not in ("i", "u"):
        raise ValueError("event times must be integer microseconds")
    _parent(path)
    with h5py.File(path, "w") as f:
        for name, data, dtype in (("x", x, np.uint16), ("y", y, np.uint16),
                                  ("t", t_us, np.int64), ("p", p, np.uint8)):
            f.create_dataset(f"events/{name}", data=np.asarray(data, dtype=dtype),
                             **hdf5plugin.Zstd())


def calibration_json(K: np.ndarray, image_hw: Sequence[int], T_cam_lidar: np.ndarray,
                     events_K: np.ndarray, events_hw: Sequence[int],
                     T_cam_events: np.ndarray) -> dict:
    """calib.json's content: MUSES' keys, plus ``height``/``width`` per camera."""
    def m(a):
        return np.asarray(a, np.float64).tolist()
    return {"intrinsics": {"rgb": {"K": m(K), "height": int(image_hw[0]),
                                   "width": int(image_hw[1])},
                           "event": {"K": m(events_K), "height": int(events_hw[0]),
                                     "width": int(events_hw[1])}},
            "extrinsics": {"lidar2rgb": m(T_cam_lidar), "event2rgb": m(T_cam_events)}}


def write_json(path: Path | str, data: Any) -> None:
    _parent(path)
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _parent(path: Path | str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)


__all__ = ["DEFAULT_EVENTS_HW", "DEFAULT_IMAGE_HW", "EVENT_ANCHORS", "FOLDERS", "LABEL",
           "LIDAR_COLUMNS", "MusesCalibration", "MusesDataset", "MusesError", "MusesScene",
           "SPLITS", "SUFFIXES", "TEST_LABELS_WITHHELD", "TIMES_OF_DAY", "WEATHERS",
           "anchor_events", "calibration_json", "check_event_anchor", "exposure_us", "layout_path",
           "list_scenes", "load_calibration", "load_meta", "parse_condition", "png_size",
           "read_camera", "read_events", "read_frame", "read_label", "read_lidar", "write_camera",
           "write_events", "write_json", "write_label", "write_lidar"]
