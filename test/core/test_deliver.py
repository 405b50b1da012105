"""DELIVER on its real on-disk layout: a tiny fixture written in DELIVER's folders, names and
PNG formats, the reader, and the DELIVER path of evaluation, all offline."""
from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anyseg_core import checkpoint as ckpt
from anyseg_core.data import build_dataset, class_info, collate
from anyseg_core.data.deliver import (CASES, CLASSES, LABEL, NORMALIZATION, PALETTE,
                                      DeliverDataset, DeliverError, DeliverSample, deliver_inputs,
                                      layout_path, list_frames, map_label, parse_condition,
                                      read_label, read_sample)
from anyseg_core.evaluate import main as evaluate_main
from anyseg_core.modalities import CAMERA, DEPTH, EVENTS, LIDAR
from anyseg_core.model import AnymodalSegmentor

REPO_ROOT = Path(__file__).resolve().parents[2]
HW = (40, 40)  # DELIVER's images are square (1042 x 1042)
MODS = (CAMERA, DEPTH, EVENTS, LIDAR)
# (condition, split, scene, frame, how its files are stored)
FRAMES = [
    ("cloud", "train", "MAP_1_point1", "000100", {}),
    ("cloud", "train", "MAP_1_point1", "000200", {}),
    ("fog", "train", "MAP_2_point3_motionblur", "000300", {"camera_rgba": True}),
    ("sun", "train", "MAP_4_point2_overexposure", "000350", {}),
    ("night", "val", "MAP_3_point9", "000400", {"label_grey": True}),
    ("rain", "val", "MAP_5_point1_eventlowres", "000500", {"event_hw": (20, 20)}),
    ("fog", "val", "MAP_6_point2_lidarjitter", "000600", {"lidar_rgba": True}),
    ("sun", "test", "MAP_7_point4", "000700", {}),
]
STORED_LABELS = np.array([0, *range(1, 26), 255], np.uint8)


def write_png(path: Path, array: np.ndarray, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path, format="PNG")


def make_deliver(root: Path, seed: int = 0) -> dict:
    """Write FRAMES in DELIVER's layout and formats; returns name -> the arrays written.

    img: 8-bit RGB (or RGBA); hha: 8-bit RGB; depth: 8-bit grey; event: 8-bit RGB (half size
    for eventlowres); lidar: 8-bit grey (or RGBA); semantic: RGB with the stored label in
    the red channel and junk in green and blue (or grey)."""
    rng = np.random.default_rng(seed)
    written = {}
    for cond, split, scene, frame, how in FRAMES:
        rgb_file = f"{frame}_rgb_front.png"
        arrays = {}

        def path(part, folder="hha", where=(cond, split, scene, rgb_file)):
            return root / layout_path(part, *where, folder)

        cam = rng.integers(0, 256, (*HW, 4 if how.get("camera_rgba") else 3), np.uint8)
        write_png(path(CAMERA), cam, "RGBA" if cam.shape[2] == 4 else "RGB")
        arrays[CAMERA] = cam
        arrays[DEPTH] = rng.integers(0, 256, (*HW, 3), np.uint8)
        write_png(path(DEPTH), arrays[DEPTH], "RGB")
        arrays["depth_image"] = rng.integers(0, 256, HW, np.uint8)
        write_png(path(DEPTH, "depth"), arrays["depth_image"], "L")
        ev_hw = how.get("event_hw", HW)
        ev = np.zeros((*ev_hw, 3), np.uint8)  # sparse: a few coloured pixels on black
        ev[rng.random(ev_hw) < 0.2] = (255, 0, 0)
        ev[rng.random(ev_hw) < 0.2] = (0, 0, 255)
        write_png(path(EVENTS), ev, "RGB")
        arrays[EVENTS] = ev
        lid = np.where(rng.random(HW) < 0.3, rng.integers(1, 256, HW), 0).astype(np.uint8)
        if how.get("lidar_rgba"):
            rgba = np.stack([lid, lid, lid, np.full(HW, 255, np.uint8)], -1)
            write_png(path(LIDAR), rgba, "RGBA")
        else:
            write_png(path(LIDAR), lid, "L")
        arrays[LIDAR] = lid
        stored = rng.choice(STORED_LABELS, HW).astype(np.uint8)
        if how.get("label_grey"):
            write_png(path(LABEL), stored, "L")
        else:
            junk = rng.integers(0, 256, (*HW, 2), np.uint8)
            write_png(path(LABEL), np.concatenate([stored[..., None], junk], -1), "RGB")
        arrays[LABEL] = stored
        written[f"{cond}/{split}/{scene}/{frame}_rgb_front"] = arrays
    return written


@pytest.fixture(scope="module")
def deliver(tmp_path_factory):
    root = tmp_path_factory.mktemp("deliver")
    return root, make_deliver(root)


@pytest.fixture
def copy(deliver, tmp_path):
    """A private copy of the fixture, to break files in."""
    dst = tmp_path / "deliver"
    shutil.copytree(deliver[0], dst)
    return dst


def test_listing_by_split_condition_and_corner_case(deliver):
    root, _ = deliver
    assert [len(list_frames(root, s)) for s in ("train", "val", "test")] == [4, 3, 1]
    frames = list_frames(root, "train")
    assert [f.name for f in frames][:2] == ["cloud/train/MAP_1_point1/000100_rgb_front",
                                            "cloud/train/MAP_1_point1/000200_rgb_front"]
    assert frames[0].relpath(DEPTH) == "hha/cloud/train/MAP_1_point1/000100_depth_front.png"
    assert frames[0].relpath(DEPTH, "depth") == \
        "depth/cloud/train/MAP_1_point1/000100_depth_front.png"
    assert frames[0].relpath(EVENTS) == "event/cloud/train/MAP_1_point1/000100_event_front.png"
    assert frames[0].relpath(LABEL) == \
        "semantic/cloud/train/MAP_1_point1/000100_semantic_front.png"
    assert {f.name.split("/")[2]: f.case for f in frames} == {
        "MAP_1_point1": None, "MAP_2_point3_motionblur": "motionblur",
        "MAP_4_point2_overexposure": "overexposure"}

    def names(**kw):
        return [f.name.split("/")[0] + "/" + f.name.split("/")[2] for f in list_frames(root, **kw)]
    assert names(split="train", conditions=["fog"]) == ["fog/MAP_2_point3_motionblur"]
    assert names(conditions="motionblur") == ["fog/MAP_2_point3_motionblur"]
    assert names(conditions=["fog-none"]) == []
    assert names(split="val", conditions=["fog", "night"]) == ["fog/MAP_6_point2_lidarjitter",
                                                               "night/MAP_3_point9"]
    assert names(cases=["none"]) == ["cloud/MAP_1_point1"] * 2 + ["night/MAP_3_point9",
                                                                  "sun/MAP_7_point4"]
    assert names(split="val", cases=["eventlowres", "lidarjitter"]) == \
        ["fog/MAP_6_point2_lidarjitter", "rain/MAP_5_point1_eventlowres"]
    assert names(conditions=["sun"], cases=["overexposure"]) == ["sun/MAP_4_point2_overexposure"]
    with pytest.raises(ValueError, match=r"unknown DELIVER corner case \['blur'\]"):
        names(cases=["motionblur", "blur"])
    with pytest.raises(ValueError, match=r"unknown DELIVER split \['training'\]"):
        names(split="training")
    assert parse_condition("Fog_MotionBlur") == ("fog", "motionblur")
    assert parse_condition("night") == ("night", None) and len(CASES) == 5
    for bad in ("snow", "fog-rain", ""):
        with pytest.raises(ValueError):
            parse_condition(bad)
    with pytest.raises(ValueError, match="split"):
        list_frames(root, "training")
    ds = DeliverDataset(root, "val", MODS, HW, conditions="rain")
    assert len(ds) == 1 and ds[0]["condition"] == "rain-eventlowres"
    with pytest.raises(ValueError, match="no DELIVER frames match the filters.*val/night 1"):
        DeliverDataset(root, "val", MODS, HW, conditions=["cloud"])


def test_label_mapping_and_ignore(deliver):
    lab = map_label(STORED_LABELS)
    assert lab.dtype == np.uint8
    assert lab.tolist() == [255, *range(25), 255]  # 0 (unlabelled) and 255 -> ignore
    with pytest.raises(ValueError, match=r"\[26, 254\]"):
        map_label(np.array([3, 26, 254], np.uint8))
    root, written = deliver
    ds = DeliverDataset(root, "val", [CAMERA], HW, return_raw=True)
    for item in ds:
        stored = written[item["name"]][LABEL]
        assert item["label"].dtype == torch.int64 and tuple(item["label"].shape) == HW
        assert torch.equal(item["label"], torch.from_numpy(map_label(stored)).long())
        assert ((item["label"] == 255) == torch.from_numpy((stored == 0) | (stored == 255))).all()
        assert item["label"][torch.from_numpy(stored == 7)].eq(6).all()  # Road
    assert CLASSES[6] == "Road" and PALETTE[6] == (128, 64, 128) and len(CLASSES) == 25


def test_each_modality_tensor(deliver):
    root, written = deliver
    ds = DeliverDataset(root, "train", MODS, HW, return_raw=True)
    assert set(ds[0]) == {"inputs", "label", "condition", "index", "name", "raw"}
    y, x = 5, 7
    for item in ds:
        arr = written[item["name"]]
        inp = item["inputs"]
        assert list(inp) == list(MODS)
        for m, t in inp.items():
            assert t.dtype == torch.float32 and tuple(t.shape) == (3, *HW), m
        mean, std = NORMALIZATION[CAMERA]
        want = (arr[CAMERA][y, x, :3] / 255 - np.array(mean)) / np.array(std)
        assert inp[CAMERA][:, y, x].numpy() == pytest.approx(want, abs=1e-5)
        assert inp[DEPTH][:, y, x].numpy() == pytest.approx(arr[DEPTH][y, x] / 255, abs=1e-6)
        assert inp[EVENTS][:, y, x].numpy() == pytest.approx(arr[EVENTS][y, x] / 255, abs=1e-6)
        assert inp[LIDAR][:, y, x].numpy() == pytest.approx([arr[LIDAR][y, x] / 255] * 3,
                                                            abs=1e-6)
        raw = item["raw"]
        assert isinstance(raw, DeliverSample) and raw.images[CAMERA].shape == (*HW, 3)
        assert raw.images[LIDAR].shape == HW and raw.meta["case"] == \
            (None if item["condition"] in ("cloud", "sun") else item["condition"].split("-")[1])
    batch = collate([ds[0], ds[1]])
    assert batch["inputs"][DEPTH].shape == (2, 3, *HW) and len(batch["raw"]) == 2

    val = DeliverDataset(root, "val", MODS, HW, return_raw=True)
    low = next(it for it in val if it["condition"] == "rain-eventlowres")
    ev = written[low["name"]][EVENTS]  # 20 x 20: enlarged by nearest neighbour
    assert low["raw"].images[EVENTS].shape == (20, 20, 3)
    assert torch.equal(low["inputs"][EVENTS],
                       torch.from_numpy(ev.repeat(2, 0).repeat(2, 1)).permute(2, 0, 1) / 255)
    jit = next(it for it in val if it["condition"] == "fog-lidarjitter")  # RGBA LiDAR
    lid = torch.from_numpy(written[jit["name"]][LIDAR]).float() / 255
    assert torch.equal(jit["inputs"][LIDAR], lid.expand(3, -1, -1))
    # the depth/ images instead of hha/: one grey channel repeated
    dep = DeliverDataset(root, "val", [DEPTH], HW, depth_folder="depth")[0]
    grey = torch.from_numpy(written[dep["name"]]["depth_image"]).float() / 255
    assert torch.allclose(dep["inputs"][DEPTH], grey.expand(3, -1, -1))

    # at a network size: dense images blend, sparse ones keep stored values
    small = DeliverDataset(root, "train", MODS, (32, 32))[0]
    assert all(tuple(t.shape) == (3, 32, 32) for t in small["inputs"].values())
    assert tuple(small["label"].shape) == (32, 32)
    assert set(torch.unique(small["inputs"][EVENTS] * 255).tolist()) <= {0.0, 255.0}
    raw = read_sample(ds.frames[0], MODS)
    plain = deliver_inputs(raw, (32, 32), normalized=False)
    assert list(plain) == list(MODS) and float(plain[CAMERA].max()) <= 1.0


def test_missing_and_corrupt_files(copy):
    frames = list_frames(copy, "train")
    missing = frames[1].path(LIDAR)
    missing.unlink()
    with pytest.raises(DeliverError, match="000200_lidar_front.png: missing") as err:
        DeliverDataset(copy, "train", MODS, HW)
    assert err.value.path == missing
    ok = DeliverDataset(copy, "train", [CAMERA, DEPTH], HW)  # LiDAR not asked for
    assert len(ok) == 4
    with pytest.warns(UserWarning, match=r"DELIVER train: 1 frame\(s\) skipped \(first: "):
        ds = DeliverDataset(copy, "train", MODS, HW, skip_broken=True)
    assert len(ds) == 3 and ds.num_skipped == 1 and ds.skipped[0][1] == missing

    bad = frames[2].path(DEPTH)  # corrupt: found when read
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    strict = DeliverDataset(copy, "train", [CAMERA, DEPTH], HW)
    with pytest.raises(DeliverError, match="000300_depth_front.png: not a readable PNG"):
        strict[2]
    item = DeliverDataset(copy, "train", [CAMERA, DEPTH], HW, skip_broken=True)
    with pytest.warns(UserWarning, match="skipping"):
        got = item[2]
    assert got["name"].endswith("000350_rgb_front") and item.num_skipped == 1
    assert item.skipped[0][1] == bad
    lenient = DeliverDataset(copy, "train", [CAMERA, DEPTH], HW, skip_broken=True)
    assert lenient.verify() == [(frames[2].name, bad, lenient.skipped[0][2])]
    assert len(lenient) == 3

    label = frames[0].path(LABEL)  # a value that is no DELIVER class
    write_png(label, np.full(HW, 30, np.uint8), "L")
    with pytest.raises(DeliverError, match=r"000100_semantic_front.png: has label values \[30\]"):
        read_label(label)
    write_png(label, np.zeros((8, 8), np.uint8), "L")
    with pytest.raises(DeliverError, match="label is 8x8 but the RGB image"):
        read_sample(frames[0], [CAMERA])
    write_png(frames[0].path(CAMERA), np.zeros(HW, np.uint8), "L")
    with pytest.raises(DeliverError, match="expected an 8-bit RGB.*mode L"):
        read_sample(frames[0], [CAMERA], label=False)
    err = pickle.loads(pickle.dumps(DeliverError(label, "broken")))
    assert "broken" in str(err)
    shutil.rmtree(copy / "event")
    with pytest.raises(DeliverError, match="no event/ folder at all"):
        DeliverDataset(copy, "val", MODS, HW)
    (copy / "img" / "snow").mkdir()
    with pytest.raises(DeliverError, match="not a DELIVER condition"):
        list_frames(copy)


def test_a_16_bit_depth_image_is_refused_with_the_folder_to_use(copy):
    frame = list_frames(copy, "train")[0]
    depth = frame.path(DEPTH, "depth")
    Image.fromarray(np.full(HW, 40_000, np.uint16)).save(depth, format="PNG")
    with pytest.raises(DeliverError, match=r"000100_depth_front.png: .*16-bit.*"
                                           r"reads depth from hha/.*depth_folder='hha'"):
        DeliverDataset(copy, "train", [DEPTH], HW, depth_folder="depth")[0]
    Image.fromarray(np.zeros(HW, np.uint16)).save(frame.path(LIDAR), format="PNG")
    with pytest.raises(DeliverError, match="16-bit") as err:
        read_sample(frame, [LIDAR], label=False)
    assert "hha/" not in str(err.value)  # the pointer to hha/ is for depth only
    assert DeliverDataset(copy, "train", [DEPTH], HW)[0]["inputs"][DEPTH].shape == (3, *HW)


def test_build_dataset_and_class_info(deliver):
    root, _ = deliver
    cfg = {"data": {"dataset": "deliver", "root": str(root), "modalities": list(MODS),
                    "size": [32, 32], "conditions": None}}
    names, palette = class_info(cfg)
    assert names == list(CLASSES) and len(names) == 25 and palette[0] == [70, 70, 70]
    assert len(palette) == 25
    assert len(class_info({"data": {"dataset": "muses"}})[0]) == 19
    ds = build_dataset(cfg, "val")
    assert isinstance(ds, DeliverDataset) and len(ds) == 3
    assert tuple(ds[0]["inputs"][LIDAR].shape) == (3, 32, 32)
    cfg["data"]["conditions"] = ["fog"]
    assert len(build_dataset(cfg, "train")) == 1
    # (load_config and evaluate's --root check stop a user before this guard)
    with pytest.raises(ValueError, match="DELIVER folder"):
        build_dataset({"data": {**cfg["data"], "root": None}}, "val")


def _save(path: Path, num_classes: int, names, palette) -> Path:
    torch.manual_seed(0)
    model = AnymodalSegmentor(list(MODS), num_classes, embed_dim=32, pretrained=False)
    data = {"dataset": "deliver", "modalities": list(MODS), "size": [32, 32]}
    return ckpt.save_model(path, model, {"input_size": [32, 32], "stage": "teacher",
                                         "step": 0, "train_config": {"data": data},
                                         "class_names": list(names),
                                         "palette": [list(c) for c in palette]})


def test_evaluate_on_deliver_end_to_end(deliver, tmp_path):
    root, _ = deliver
    c = _save(tmp_path / "deliver.safetensors", 25, CLASSES, PALETTE)
    out = tmp_path / "eval"
    proc = subprocess.run([sys.executable, "-m", "anyseg_core.evaluate", "--dataset", "deliver",
                           "--root", str(root), "--checkpoint", str(c), "--out", str(out),
                           "--device", "cpu", "--subsets", "all"],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads((out / "anymodal.json").read_text())
    assert rep["protocol"]["dataset"] == "deliver" and rep["protocol"]["num_samples"] == 3
    assert len(rep["subsets"]) == 15 and "CDEL" in rep["subsets"]
    assert set(rep["subsets"]["CDEL"]["iou"]) == set(CLASSES)
    assert (out / "montage.png").is_file() and (out / "anymodal.csv").is_file()
    # a checkpoint whose classes are not the dataset's is refused, not silently mis-scored
    # (the 25-class checkpoint on the synthetic world's 19 Cityscapes classes)
    with pytest.raises(SystemExit):
        evaluate_main(["--dataset", "synthetic", "--checkpoint", str(c), "--out",
                       str(tmp_path / "e19"), "--device", "cpu", "--subsets", "C"])
