"""DELIVER (Zhang et al., CVPR 2023, the CMNeXt paper) read from its real on-disk layout.

Layout (the unzipped download; every frame is found from its RGB image)::

    <root>/img/<condition>/<split>/<scene>/<frame>_rgb_front.png        8-bit RGB(A)
    <root>/hha/<condition>/<split>/<scene>/<frame>_depth_front.png      depth as HHA, 8-bit
    <root>/depth/<condition>/<split>/<scene>/<frame>_depth_front.png    depth image (optional)
    <root>/event/<condition>/<split>/<scene>/<frame>_event_front.png    event image, 8-bit
    <root>/lidar/<condition>/<split>/<scene>/<frame>_lidar_front.png    LiDAR image, 8-bit
    <root>/semantic/<condition>/<split>/<scene>/<frame>_semantic_front.png  labels, channel 0

condition: cloud, fog, night, rain, sun. split: train, val, test. A scene whose name ends
in ``_<case>`` holds one of the corner cases motionblur, overexposure, underexposure,
lidarjitter, eventlowres (e.g. ``MAP_1_point12_motionblur``); other scenes have none.
Another modality's path is the RGB path with the first folder swapped and ``_rgb`` replaced
in the file name (``_depth``, ``_event``, ``_lidar``, ``_semantic``), as the official loader
derives it; the official "depth" modality is read from ``hha/`` (``depth_folder="depth"``
reads the ``depth/`` images instead).

What the official loader (``semseg/datasets/deliver.py`` and ``augmentations_mm.py`` of
the DELIVER repository) does, and so what this reader does:

- the RGB image keeps its first three channels; every other modality is an 8-bit image
  whose single channel is repeated to three, whose alpha channel is dropped;
- labels are channel 0 of the semantic PNG: stored 1..25 become classes 0..24, stored 0
  (unlabelled) and 255 become 255 (ignore); anything else is refused here (the official
  code would turn it into a class id >= 25);
- camera: [0, 1] RGB normalised with the ImageNet mean/std; depth, events, LiDAR: only
  divided by 255 (:data:`NORMALIZATION`: mean 0, std 1). DELIVER's images are not in the
  units of this project's depth / LiDAR / event tensors (metres, counts), so the project's
  :data:`anyseg_core.modalities.NORMALIZATION` does not apply to them.

They are camera-aligned images already, so they do not go through LiDAR projection or event
rendering (:func:`anyseg_core.sensors.prepare_inputs`), nor into a
:class:`~anyseg_core.sensors.RawFrame` (whose ``depth`` is metres, ``events_image`` event
counts and ``lidar`` points): :func:`read_sample` returns a :class:`DeliverSample` of the
images as stored and :func:`deliver_inputs` turns it into network inputs. Resizing to the
network follows the project's rules: camera and depth (dense images) bilinear with
antialiasing, events and LiDAR (sparse images) without ever blending samples (nearest when
enlarging, e.g. the low-resolution event images; the pixel with the largest sum when
shrinking). The official code resizes all of them bilinearly.

Every problem with a file raises :class:`DeliverError` naming the file and what is wrong.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..modalities import CAMERA, DEPTH, EVENTS, IGNORE_INDEX, LIDAR, check_modalities
from ..sensors import (as_tensor, camera_to_tensor, resize_dense,
                       resize_sparse)
from .readers import DataFileError, SkipBrokenItems, as_set, open_png

SPLITS = ("train", "val", "test")
CONDITIONS = ("cloud", "fog", "night", "rain", "sun")
#: Corner cases: the suffix of a scene's name (``<scene>_<case>``).
CASES = ("motionblur", "overexposure", "underexposure", "lidarjitter", "eventlowres")
#: In a ``cases`` filter: the scenes without a corner case.
NO_CASE = "none"
LABEL = "label"
MODALITIES = (CAMERA, DEPTH, EVENTS, LIDAR)
#: Folder of each part (this project's modality names -> DELIVER's folders).
FOLDERS = {CAMERA: "img", DEPTH: "hha", EVENTS: "event", LIDAR: "lidar", LABEL: "semantic"}
DEPTH_FOLDERS = ("hha", "depth")
#: What replaces ``_rgb`` in the RGB file name to name the other parts' files.
TOKENS = {CAMERA: "_rgb", DEPTH: "_depth", EVENTS: "_event", LIDAR: "_lidar",
          LABEL: "_semantic"}
#: DELIVER's image size (all modalities but the low-resolution event images).
IMAGE_HW = (1042, 1042)
#: Frames per split in the release (the DELIVER paper).
SPLIT_SIZES = {"train": 3983, "val": 2005, "test": 1897}

#: The 25 classes in train-id order, and their colours, as the official loader has them.
CLASSES = (
    "Building", "Fence", "Other", "Pedestrian", "Pole", "RoadLine", "Road", "SideWalk",
    "Vegetation", "Cars", "Wall", "TrafficSign", "Sky", "Ground", "Bridge", "RailTrack",
    "GroundRail", "TrafficLight", "Static", "Dynamic", "Water", "Terrain", "TwoWheeler", "Bus",
    "Truck",
)
PALETTE = (
    (70, 70, 70), (100, 40, 40), (55, 90, 80), (220, 20, 60), (153, 153, 153),
    (157, 234, 50), (128, 64, 128), (244, 35, 232), (107, 142, 35), (0, 0, 142),
    (102, 102, 156), (220, 220, 0), (70, 130, 180), (81, 0, 81), (150, 100, 100),
    (230, 150, 140), (180, 165, 180), (250, 170, 30), (110, 190, 160), (170, 120, 50),
    (45, 60, 150), (145, 170, 100), (0, 0, 230), (0, 60, 100), (0, 0, 70),
)
NUM_CLASSES = len(CLASSES)
#: Stored label value -> train id: 1..25 -> 0..24; 0 and 255 -> 255. Other values are not
#: DELIVER labels (see :func:`map_label`).
LABEL_LUT = np.full(256, IGNORE_INDEX, np.uint8)
LABEL_LUT[1:NUM_CLASSES + 1] = np.arange(NUM_CLASSES, dtype=np.uint8)
_VALID_STORED = np.zeros(256, bool)
_VALID_STORED[[0, *range(1, NUM_CLASSES + 1), 255]] = True

#: Per-channel (mean, std) applied to DELIVER inputs in [0, 1] (8-bit values / 255): the
#: official loader's ImageNet statistics for RGB and none at all for the other modalities.
NORMALIZATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    CAMERA: ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    DEPTH: ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    EVENTS: ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    LIDAR: ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
#: Modalities resized as dense images (bilinear); the others are sparse (never blended).
_DENSE = frozenset({CAMERA, DEPTH})
#: How the training augmentation rescales each modality, as :func:`deliver_inputs` resizes.
RESCALE = {m: "dense" if m in _DENSE else "busiest_block" for m in MODALITIES}


class DeliverError(DataFileError):
    """A DELIVER file (or folder) that is missing or cannot be used; ``path`` names it."""


# --------------------------------------------------------------------------- conditions


def parse_condition(text: str) -> tuple[Optional[str], Optional[str]]:
    """``"fog-motionblur"`` -> ("fog", "motionblur"); ``"fog"`` -> ("fog", None) (any case);
    ``"motionblur"`` -> (None, "motionblur") (any condition); ``"fog-none"`` -> ("fog",
    "none") (fog without a corner case). Raises ValueError on anything else."""
    condition = case = None
    for part in str(text).strip().lower().replace("_", "-").split("-"):
        if part in CONDITIONS and condition is None:
            condition = part
        elif part in (*CASES, NO_CASE) and case is None:
            case = part
        elif part:
            raise ValueError(f"cannot parse DELIVER condition {text!r}: {part!r} is not a "
                             f"condition {list(CONDITIONS)} or a corner case {list(CASES)} "
                             f"(or {NO_CASE!r}), or it repeats one")
    if condition is None and case is None:
        raise ValueError(f"empty DELIVER condition {text!r}")
    return condition, case


def scene_case(scene: str) -> Optional[str]:
    """The corner case of a scene folder (``MAP_1_point12_motionblur`` -> ``motionblur``),
    or None."""
    suffix = scene.rsplit("_", 1)[-1].lower() if "_" in scene else ""
    return suffix if suffix in CASES else None


# --------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class DeliverFrame:
    """One DELIVER frame: where it is and what it shows.

    ``file``: the RGB image's file name (``<frame>_rgb_front.png``)."""

    root: Path
    condition: str
    split: str
    scene: str
    file: str

    @property
    def case(self) -> Optional[str]:
        return scene_case(self.scene)

    @property
    def name(self) -> str:
        """``<condition>/<split>/<scene>/<file without .png>``: unique in a DELIVER root."""
        return f"{self.condition}/{self.split}/{self.scene}/{self.file[:-len('.png')]}"

    @property
    def condition_name(self) -> str:
        """``fog`` or, in a corner-case scene, ``fog-motionblur`` (see :func:`parse_condition`)."""
        return self.condition if self.case is None else f"{self.condition}-{self.case}"

    def relpath(self, part: str, depth_folder: str = "hha") -> str:
        """Path of ``part`` (camera, depth, events, lidar, label) relative to the root."""
        return layout_path(part, self.condition, self.split, self.scene, self.file,
                           depth_folder)

    def path(self, part: str, depth_folder: str = "hha") -> Path:
        return self.root / self.relpath(part, depth_folder)


def layout_path(part: str, condition: str, split: str, scene: str, rgb_file: str,
                depth_folder: str = "hha") -> str:
    """``<folder>/<condition>/<split>/<scene>/<file>``, where ``file`` is the RGB file name
    with ``_rgb`` replaced by the part's token (relative to the root)."""
    if part not in FOLDERS:
        raise ValueError(f"unknown DELIVER part {part!r}; expected one of {list(FOLDERS)}")
    if depth_folder not in DEPTH_FOLDERS:
        raise ValueError(f"depth_folder must be one of {list(DEPTH_FOLDERS)}, got "
                         f"{depth_folder!r}")
    folder = depth_folder if part == DEPTH else FOLDERS[part]
    return f"{folder}/{condition}/{split}/{scene}/{rgb_file.replace('_rgb', TOKENS[part])}"


def list_frames(root: Path | str, split: Optional[str | Iterable[str]] = None,
                conditions: Optional[str | Iterable[str]] = None,
                cases: Optional[str | Iterable[str]] = None,
                skipped: Optional[list] = None) -> list[DeliverFrame]:
    """The frames of ``<root>/img`` that pass every filter, sorted by path.

    split: a name or a collection of names (None = all). conditions: names such as ``fog``,
    ``motionblur`` (any condition) or ``fog-motionblur`` (:func:`parse_condition`); a frame
    passes when it matches one of them. cases: corner-case names, and ``none`` for scenes
    without one; a frame passes when its case is one of them. A folder under ``img/`` that is
    not a DELIVER condition, or an image whose name has no ``_rgb`` (the other files could
    not be found from it), raises :class:`DeliverError`, or is appended to ``skipped`` as
    ``(name, path, problem)`` when a list is given."""
    root = Path(root)
    if not root.is_dir():
        raise DeliverError(root, "the DELIVER root folder does not exist")
    img = root / FOLDERS[CAMERA]
    if not img.is_dir():
        raise DeliverError(img, "missing: not a DELIVER root (it has no img/ folder with the "
                                "RGB images)")
    splits = as_set(split, SPLITS, "DELIVER split") or set(SPLITS)
    patterns = [parse_condition(c) for c in ([conditions] if isinstance(conditions, str)
                                              else conditions)] if conditions else None
    wanted_cases = as_set(cases, (*CASES, NO_CASE), "DELIVER corner case")

    def problem(name: str, path: Path, what: str) -> None:
        if skipped is None:
            raise DeliverError(path, what)
        skipped.append((name, path, what))

    out = []
    for cond_dir in sorted(p for p in img.iterdir() if p.is_dir()):
        if cond_dir.name not in CONDITIONS:
            problem(cond_dir.name, cond_dir, f"is not a DELIVER condition folder (expected "
                                             f"some of {list(CONDITIONS)})")
            continue
        for s in sorted(splits):
            split_dir = cond_dir / s
            if not split_dir.is_dir():
                continue
            for scene_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
                case = scene_case(scene_dir.name)
                if wanted_cases is not None and (case or NO_CASE) not in wanted_cases:
                    continue
                if patterns and not any(
                        pc in (None, cond_dir.name)
                        and (pk is None or pk == (case or NO_CASE)) for pc, pk in patterns):
                    continue
                for f in sorted(scene_dir.glob("*.png")):
                    frame = DeliverFrame(root, cond_dir.name, s, scene_dir.name, f.name)
                    if "_rgb" not in f.name:
                        problem(frame.name, f, "has no '_rgb' in its name, so the files of "
                                               "the other modalities cannot be found from it")
                        continue
                    out.append(frame)
    return out


# --------------------------------------------------------------------------- file readers


def read_image(path: Path | str, modality: str) -> np.ndarray:
    """One modality's PNG as stored, as uint8: H x W x 3 for RGB (an alpha channel is
    dropped, a palette expanded to RGB as torchvision's PNG decoder does), H x W for a
    single-channel image (not allowed for the camera). Other PNG modes (16-bit, grey+alpha,
    1-bit) raise :class:`DeliverError`: the official loader divides by 255 (a 16-bit depth
    image is refused with a pointer to ``hha/``, the folder it reads depth from)."""
    path = Path(path)
    img = open_png(path, DeliverError)
    mode = img.mode
    if mode == "P":
        img, mode = img.convert("RGB"), "RGB"
    if mode in ("RGB", "RGBA"):
        return np.asarray(img, dtype=np.uint8)[..., :3]
    if mode == "L" and modality != CAMERA:
        return np.asarray(img, dtype=np.uint8)
    wanted = "an 8-bit RGB(A)" if modality == CAMERA else "an 8-bit grey, RGB or RGBA"
    why = ""
    if mode.startswith("I"):  # "I;16", "I;16B", "I": more than 8 bits per sample
        why = (": a 16-bit image, which the official DELIVER loader never reads (it divides "
               "every image by 255)")
        if modality == DEPTH:
            why += ("; it reads depth from hha/ (8-bit HHA images): use depth_folder='hha', "
                    "the default, not the depth/ folder")
    raise DeliverError(path, f"expected {wanted} PNG for {modality}, got PIL mode {mode}{why}")


def map_label(stored: np.ndarray, path: Optional[Path | str] = None) -> np.ndarray:
    """Stored DELIVER label values (channel 0 of the semantic PNG) -> uint8 train ids:
    1..25 -> 0..24, 0 and 255 -> 255 (ignore). Any other value raises (a
    :class:`DeliverError` naming ``path`` when given, else ValueError)."""
    stored = np.asarray(stored)
    if stored.dtype != np.uint8:
        raise ValueError(f"DELIVER labels are uint8, got {stored.dtype}")
    counts = np.bincount(stored.ravel(), minlength=256)
    bad = np.flatnonzero((counts > 0) & ~_VALID_STORED)
    if bad.size:
        what = (f"has label values {bad[:8].tolist()} that are not DELIVER classes (0 = "
                f"unlabelled, 1..{NUM_CLASSES}, 255)")
        if path is None:
            raise ValueError(what)
        raise DeliverError(path, what)
    return LABEL_LUT[stored]


def read_label(path: Path | str) -> np.ndarray:
    """``*_semantic_front.png`` -> H x W uint8 train ids (0..24, 255 = ignore), from channel
    0 (the red channel of an RGB(A) image, the value of a grey one)."""
    path = Path(path)
    img = open_png(path, DeliverError)
    if img.mode == "P":
        img = img.convert("RGB")
    if img.mode not in ("L", "RGB", "RGBA"):
        raise DeliverError(path, f"expected an 8-bit grey, RGB or RGBA label PNG, got PIL "
                                 f"mode {img.mode}")
    stored = np.asarray(img, dtype=np.uint8)
    if stored.ndim == 3:
        stored = stored[..., 0]
    return map_label(np.ascontiguousarray(stored), path)


# --------------------------------------------------------------------------- one frame


@dataclass
class DeliverSample:
    """One frame's images as stored (see :func:`read_image`), keyed by this project's
    modality names, and its label (H x W uint8 train ids, or None when not read).

    meta: dataset, name, split, condition, scene, case, condition_name, paths (what was
    read), depth_folder."""

    images: dict[str, np.ndarray]
    label: Optional[np.ndarray] = None
    image_hw: tuple[int, int] = IMAGE_HW
    meta: dict = field(default_factory=dict)


def read_sample(frame: DeliverFrame, modalities: Optional[Iterable[str]] = None,
                label: bool = True, depth_folder: str = "hha") -> DeliverSample:
    """The images of ``frame`` for ``modalities`` (camera, depth, events, lidar; None: those
    on disk) and, with ``label``, its label (required then). A requested file that is
    missing or unreadable raises :class:`DeliverError` naming it; so does a label whose size
    differs from the RGB image's. ``image_hw`` is the RGB image's size (else the label's,
    else 1042 x 1042)."""
    if modalities is None:
        mods = [m for m in MODALITIES if frame.path(m, depth_folder).is_file()]
    else:
        mods = list(modalities)
        unknown = [m for m in mods if m not in MODALITIES]
        if unknown:
            raise ValueError(f"DELIVER has no modality {unknown}; it has {list(MODALITIES)}")
    images: dict[str, np.ndarray] = {}
    paths: dict[str, str] = {}
    for m in mods:
        path = frame.path(m, depth_folder)
        images[m] = read_image(path, m)
        paths[m] = str(path)
    lab = None
    if label:
        path = frame.path(LABEL)
        lab = read_label(path)
        paths[LABEL] = str(path)
    hw = None
    if CAMERA in images:
        hw = tuple(images[CAMERA].shape[:2])
    if lab is not None:
        if hw is not None and tuple(lab.shape) != hw:
            raise DeliverError(frame.path(LABEL), f"label is {lab.shape[1]}x{lab.shape[0]} but "
                                                  f"the RGB image {frame.path(CAMERA)} is "
                                                  f"{hw[1]}x{hw[0]}")
        hw = hw or tuple(lab.shape)
    return DeliverSample(
        images=images, label=lab, image_hw=(int(hw[0]), int(hw[1])) if hw else IMAGE_HW,
        meta={"dataset": "deliver", "name": frame.name, "split": frame.split,
              "condition": frame.condition, "scene": frame.scene, "case": frame.case,
              "condition_name": frame.condition_name, "paths": paths,
              "depth_folder": depth_folder})


# --------------------------------------------------------------------------- network inputs


def image_to_tensor(image: np.ndarray | torch.Tensor,
                    device: Optional[torch.device | str] = None) -> torch.Tensor:
    """A stored DELIVER image (H x W, H x W x 1, x 3 or x 4 uint8) as float32 ``[3, H, W]``
    in [0, 1]: one channel is repeated to three, alpha dropped (the official loader's
    rule), values divided by 255."""
    x = as_tensor(image, device=device)
    if x.dtype != torch.uint8:
        raise ValueError(f"a DELIVER image must be uint8, got {x.dtype}")
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or x.shape[2] not in (1, 3, 4):
        raise ValueError(f"a DELIVER image must be H x W (x 1, 3 or 4), got shape "
                         f"{tuple(x.shape)}")
    x = x[..., :3] if x.shape[2] >= 3 else x.expand(-1, -1, 3)
    return x.permute(2, 0, 1).to(torch.float32) / 255.0


def normalize(x: torch.Tensor, modality: str) -> torch.Tensor:
    """``(x - mean) / std`` per channel with DELIVER's :data:`NORMALIZATION`."""
    mean, std = NORMALIZATION[modality]
    shape = (3, 1, 1)
    return (x - torch.tensor(mean, dtype=x.dtype, device=x.device).view(shape)) \
        / torch.tensor(std, dtype=x.dtype, device=x.device).view(shape)


def deliver_inputs(sample: DeliverSample | Mapping[str, Any], size_hw: Sequence[int],
                   modalities: Optional[Iterable[str]] = None, normalized: bool = True,
                   device: Optional[torch.device | str] = None) -> dict[str, torch.Tensor]:
    """Network inputs from a :class:`DeliverSample` (or a dict modality -> stored image):
    float32 ``[3, h, w]`` per requested modality present (all present ones when
    ``modalities`` is None), at ``size_hw``, normalised with :data:`NORMALIZATION` unless
    ``normalized=False`` (then in [0, 1]).

    camera: RGB / 255, antialiased bilinear resize. depth: the HHA (or depth) image / 255,
    repeated to 3 channels when single-channel, antialiased bilinear resize (a dense image).
    events, lidar: the image / 255 (one channel repeated), resized without blending: nearest
    when enlarging (low-resolution event images), the pixel with the largest channel sum of
    each block when shrinking."""
    images = sample.images if isinstance(sample, DeliverSample) else dict(sample)
    mods = check_modalities(modalities) if modalities is not None else \
        tuple(m for m in MODALITIES if m in images)
    h, w = int(size_hw[0]), int(size_hw[1])
    out: dict[str, torch.Tensor] = {}
    for m in mods:
        img = images.get(m)
        if img is None:
            continue
        if m == CAMERA:
            if img.ndim != 3:
                raise ValueError(f"a DELIVER RGB image must be H x W x 3 (or 4), got shape "
                                 f"{tuple(img.shape)}")
            x = camera_to_tensor(img[..., :3], "rgb8", device)
        else:
            x = image_to_tensor(img, device)
        if m in _DENSE:
            x = resize_dense(x, (h, w))
        else:
            x = resize_sparse(x, (h, w), "sum")
        out[m] = normalize(x, m) if normalized else x
    return out


# --------------------------------------------------------------------------- dataset


class DeliverDataset(SkipBrokenItems, Dataset):
    """DELIVER frames as network inputs (:func:`deliver_inputs`).

    Items are dicts like :class:`~anyseg_core.data.muses.MusesDataset`'s: ``inputs``
    (modality -> normalised float32 [3, H, W]), ``label`` (int64 [H, W], 255 = ignore),
    ``condition`` (``fog``, or ``fog-motionblur`` in a corner-case scene), ``index``,
    ``name`` (``<condition>/<split>/<scene>/<frame>_rgb_front``) and ``raw`` (the
    :class:`DeliverSample`) when ``return_raw``.

    root: the DELIVER folder. split: train / val / test. modalities: among camera, depth,
    events, lidar; every frame must have their files and a label. conditions: names such as
    ``fog``, ``motionblur``, ``fog-motionblur`` (a frame passes when it matches any);
    cases: corner cases (and ``none``) a frame's scene must have. depth_folder: ``hha``
    (the official loader's depth) or ``depth``.

    Missing files are found when the dataset is built (one stat per file); a corrupt file
    when its item is read. Either raises :class:`DeliverError` naming the file, or with
    ``skip_broken`` the frame is left out (built) or replaced by the next readable one
    (read) and recorded once in ``skipped`` as ``(name, path, problem)``; ``num_skipped``
    counts them (per process: DataLoader workers keep their own). ``verify()`` reads every
    frame once to find corrupt files up front.

    augment: optional ``callable(inputs, label, generator) -> (inputs, label)`` applied with
    a generator seeded by (seed, index); the training script augments in its own wrapper.
    """

    classes = CLASSES
    palette = PALETTE

    def __init__(self, root: Path | str, split: str = "train",
                 modalities: Iterable[str] = MODALITIES,
                 size_hw: Sequence[int] = (1024, 1024),
                 conditions: Optional[str | Iterable[str]] = None,
                 cases: Optional[str | Iterable[str]] = None, skip_broken: bool = False,
                 augment: Optional[Callable] = None, seed: int = 0, return_raw: bool = False,
                 depth_folder: str = "hha") -> None:
        self.root = Path(root)
        self.split = split
        self.modalities = check_modalities(modalities)
        if split not in SPLITS:
            raise ValueError(f"unknown DELIVER split {split!r}; expected one of {list(SPLITS)}")
        if depth_folder not in DEPTH_FOLDERS:
            raise ValueError(f"depth_folder must be one of {list(DEPTH_FOLDERS)}, got "
                             f"{depth_folder!r}")
        self.size_hw = (int(size_hw[0]), int(size_hw[1]))
        self.skip_broken = skip_broken
        self.depth_folder = depth_folder
        self.augment, self.seed, self.return_raw = augment, int(seed), return_raw
        self.skipped: list[tuple[str, Path, str]] = []
        conditions = [conditions] if isinstance(conditions, str) else conditions
        cases = [cases] if isinstance(cases, str) else cases
        self.filters = {"split": split, "conditions": list(conditions) if conditions else None,
                        "cases": list(cases) if cases else None}
        frames = list_frames(self.root, split, conditions, cases,
                             skipped=self.skipped if skip_broken else None)
        self.frames = self._usable(frames, [*self.modalities, LABEL])

    error, dataset_name, unit = DeliverError, "DELIVER", "frame"

    def _items(self) -> list[DeliverFrame]:
        return self.frames

    def _part_path(self, frame: DeliverFrame, part: str) -> Path:
        return frame.path(part, self.depth_folder)

    def _folder(self, part: str) -> Path:
        return self.root / (self.depth_folder if part == DEPTH else FOLDERS[part])

    def _empty_message(self, n_before: int) -> str:
        available: dict[str, int] = {}
        try:
            for f in list_frames(self.root, skipped=[]):
                key = f"{f.split}/{f.condition_name}"
                available[key] = available.get(key, 0) + 1
        except DeliverError:
            pass
        listing = ", ".join(f"{k} {v}" for k, v in sorted(available.items())) or "none"
        why = "after skipping broken ones" if n_before else "match the filters"
        return f"no DELIVER frames {why} in {self.root} ({self.filters}); it has: {listing}"

    def raw(self, index: int) -> DeliverSample:
        """The :class:`DeliverSample` of item ``index`` (the requested modalities and label)."""
        return read_sample(self.frames[index], self.modalities, label=True,
                           depth_folder=self.depth_folder)

    def _item(self, i: int, index: int) -> dict:
        sample = self.raw(i)
        inputs = deliver_inputs(sample, self.size_hw, self.modalities)
        return self._training_item(inputs, sample.label, index, sample.meta["condition_name"],
                                   sample.meta["name"], sample)

    def _read(self, frame: DeliverFrame) -> None:
        read_sample(frame, self.modalities, label=True, depth_folder=self.depth_folder)


__all__ = ["CASES", "CLASSES", "CONDITIONS", "DEPTH_FOLDERS", "DeliverDataset", "DeliverError",
           "DeliverFrame", "DeliverSample", "FOLDERS", "IMAGE_HW", "LABEL", "LABEL_LUT",
           "MODALITIES", "NORMALIZATION", "NO_CASE", "NUM_CLASSES", "PALETTE", "SPLITS",
           "SPLIT_SIZES", "TOKENS", "deliver_inputs", "image_to_tensor", "layout_path",
           "list_frames", "map_label", "normalize", "parse_condition", "read_image",
           "read_label", "read_sample", "scene_case"]
