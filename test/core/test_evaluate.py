"""Anymodal evaluation, its metrics, and the inference runtime shared with the node."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from anyseg_core.data.synthetic import SyntheticDataset
from anyseg_core.evaluate import main as evaluate_main, parse_subsets
from anyseg_core.metrics import ConfusionMatrix
from anyseg_core.runtime import Runtime, pick_device
from helpers import load_module

MODS = ("camera", "events", "lidar")
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_miou_from_one_confusion_matrix_leaves_unseen_classes_out():
    cm = ConfusionMatrix(4)
    label = torch.tensor([[0, 0, 1, 1], [1, 255, 255, 0]])
    pred = torch.tensor([[0, 1, 1, 1], [1, 3, 2, 0]])
    cm.update(pred, label)
    r = cm.compute()
    # class 0: tp 2, fp 0, fn 1 -> 2/3; class 1: tp 3, fp 1 -> 3/4; classes 2, 3 unseen
    # (their only predictions fall on ignored pixels)
    assert r["iou"][0] == pytest.approx(2 / 3) and r["iou"][1] == pytest.approx(3 / 4)
    assert r["iou"][2] is None and r["iou"][3] is None
    assert r["miou"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert r["pixel_acc"] == pytest.approx(5 / 6) and r["pixels"] == 6
    # class 0: 3 labelled pixels, 2 predicted as it (both right); class 1: 3 labelled, 4
    # predicted; class 2 is predicted only on an ignored pixel: no recall, no precision
    assert r["recall"][:3] == [pytest.approx(2 / 3), 1.0, None] and r["recall"][3] is None
    assert r["precision"][:2] == [1.0, pytest.approx(3 / 4)] and r["precision"][2:] == [None] * 2
    assert r["matrix"] == [[2, 1, 0, 0], [0, 3, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_pixels_predicted_as_no_class_are_misses_not_false_positives():
    # A Runtime with min_confidence predicts 255 where it is unsure: the pixel is missed by
    # its class and counted as no class's prediction (not the last class's).
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 255, 1, 1, 7]), torch.tensor([0, 0, 1, 1, 255]))
    r = cm.compute()
    assert r["matrix"] == [[1, 0, 0], [0, 2, 0], [0, 0, 0]] and r["unpredicted"] == [1, 0, 0]
    assert r["iou"] == [0.5, 1.0, None] and r["miou"] == pytest.approx(0.75)
    assert r["recall"][0] == 0.5 and r["precision"][0] == 1.0
    assert r["pixels"] == 4 and r["pixel_acc"] == pytest.approx(3 / 4)
    other = ConfusionMatrix(3)
    other.update(torch.tensor([255, 2]), torch.tensor([2, 2]))
    cm.merge(other)
    assert cm.compute()["unpredicted"] == [1, 0, 1]


def test_the_report_names_the_subset_with_the_lowest_miou_as_the_worst():
    """``worst_subset`` is what the experiment tables print beside the worst mIoU: the subset
    with the lowest mIoU, wherever it stands in the order (here neither first nor last)."""
    from anyseg_core.evaluate import report

    label = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    wrong = {("camera",): 1, ("events",): 4, ("lidar",): 2, MODS: 0}  # pixels mislabelled
    results = {}
    for subset, n in wrong.items():
        pred = label.clone()
        pred[:n] = (pred[:n] + 1) % 3
        cm = ConfusionMatrix(3)
        cm.update(pred, label)
        results[subset] = cm.compute()
    rep = report(results, ["a", "b", "c"])
    mious = {name: r["miou"] for name, r in rep["subsets"].items()}
    assert list(mious) == ["C", "E", "L", "CEL"]
    assert mious["E"] < mious["L"] < mious["C"] < mious["CEL"] == 100.0, mious
    assert rep["worst_subset"] == "E", (rep["worst_subset"], mious)
    assert rep["worst_miou"] == pytest.approx(mious["E"])
    assert rep["mean_miou"] == pytest.approx(np.mean(list(mious.values())))


def test_labels_outside_the_classes_are_an_error_not_fewer_pixels():
    """A label id the model has no class for (a wrong class mapping) must not silently drop
    out of the counts and raise the mIoU."""
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"labels \[5\] are outside \[0, 3\)"):
        cm.update(torch.tensor([0, 1, 2]), torch.tensor([0, 5, 255]))
    with pytest.raises(ValueError, match=r"labels \[-1\]"):
        cm.update(torch.tensor([0, 1]), torch.tensor([-1, 1]))


def test_label_colours_of_unknown_ids_are_black():
    from anyseg_core.viz import colorize_labels, colormap

    rgb = colorize_labels(np.array([[0, 255, 256, -1, 300]]), [(10, 20, 30)])
    assert rgb[0, 0].tolist() == [10, 20, 30]
    assert rgb[0, 1:].tolist() == [[0, 0, 0]] * 4  # 256 and 300 no longer wrap to road
    values = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    masked = colormap(values, empty=np.array([[1, 0], [0, 0]], np.uint8))  # a 0/1 mask
    assert masked[0, 0].tolist() == [0, 0, 0] and masked[1, 1].any()


def test_class_report_counts_pixels_predicted_as_no_class():
    mod = load_module("class_report", REPO_ROOT / "scripts" / "class_report.py")
    # class a: 8 labelled pixels, 4 right, 1 called b, 3 predicted as no class
    rows = mod.class_rows(["a", "b"], [[4, 1], [0, 5]], top=2, unpredicted=[3, 0])
    assert rows["a"]["recall"] == pytest.approx(50.0) and rows["a"]["precision"] == 100.0
    assert rows["a"]["pred_over_label"] == pytest.approx(4 / 8)
    assert rows["a"]["missed_to"] == [("no class", pytest.approx(37.5)),
                                      ("b", pytest.approx(12.5))]
    older = mod.class_rows(["a", "b"], [[4, 1], [0, 5]], top=2)  # a file without the counts
    assert older["a"]["recall"] == pytest.approx(80.0) and older["a"]["missed_to"] == [
        ("b", pytest.approx(20.0))]


def test_subset_specs():
    assert len(parse_subsets(["all"], MODS)) == 7
    assert parse_subsets(["lidar,camera", "events", "CL"], MODS) == [("camera", "lidar"),
                                                                     ("events",)]
    with pytest.raises(ValueError, match="radar"):
        parse_subsets(["camera+radar"], MODS)


def test_evaluate_writes_the_table_json_csv_and_pictures(tiny_student, tmp_path, capsys):
    out = tmp_path / "eval"
    assert evaluate_main(["--checkpoint", str(tiny_student), "--dataset", "synthetic",
                          "--num-samples", "2", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "| C | E | L | CE | CL | EL | CEL | Mean |" in printed.replace("|  |", "|")
    rep = json.loads((out / "anymodal.json").read_text())
    assert list(rep["subsets"]) == ["C", "E", "L", "CE", "CL", "EL", "CEL"]
    mious = [r["miou"] for r in rep["subsets"].values()]
    assert rep["mean_miou"] == pytest.approx(np.mean(mious))
    assert rep["worst_miou"] == pytest.approx(min(mious))
    assert rep["subsets"][rep["worst_subset"]]["miou"] == pytest.approx(min(mious))
    assert rep["protocol"]["num_samples"] == 2 and rep["protocol"]["missing"] == "drop"
    assert set(rep["subsets"]["CEL"]["iou"]) >= {"road", "car", "sky"}
    rows = list(csv.reader(open(out / "anymodal.csv")))
    assert rows[0][:4] == ["subset", "modalities", "miou", "pixel_acc"] and len(rows) == 9
    for png in ("miou_per_subset.png", "montage.png"):
        assert cv2.imread(str(out / png)) is not None, png
    # the confusion matrices agree with the per-class figures of anymodal.json
    conf = json.loads((out / "confusion.json").read_text())
    classes = conf["classes"]
    assert list(conf["subsets"]) == list(rep["subsets"]) and "road" in classes
    assert list(conf["unpredicted"]) == list(rep["subsets"])
    for name, m in conf["subsets"].items():
        assert conf["unpredicted"][name] == [0] * len(classes)  # evaluate predicts every pixel
        per = rep["subsets"][name]
        for i, c in enumerate(classes):
            labelled, predicted = sum(m[i]), sum(row[i] for row in m)
            assert (per["recall"][c] is None) == (labelled == 0)
            if labelled:
                assert per["recall"][c] == pytest.approx(100 * m[i][i] / labelled)
            if predicted:
                assert per["precision"][c] == pytest.approx(100 * m[i][i] / predicted)
            if labelled + predicted:
                union = labelled + predicted - m[i][i]
                assert per["iou"][c] == pytest.approx(100 * m[i][i] / union)
        assert per["pixel_acc"] == pytest.approx(
            100 * sum(m[i][i] for i in range(len(m))) / sum(map(sum, m)))
    # and scripts/class_report.py reads them
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "class_report.py"),
                           str(out), str(out), "--names", "a,b", "--classes", "road,car",
                           "--subset", "CL"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    road = f"{rep['subsets']['CL']['iou']['road']:.1f}"
    assert "**road**" in proc.stdout and "**car**" in proc.stdout and "**sky**" not in proc.stdout
    assert f"| a | {road} |" in proc.stdout and f"| b | {road} |" in proc.stdout
    bad = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "class_report.py"),
                          str(out), "--classes", "unicorn"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "unicorn" in bad.stderr


def test_evaluate_selected_subsets_with_zero_filling(tiny_student, tmp_path, capsys):
    out = tmp_path / "eval"
    proc = subprocess.run([sys.executable, "-m", "anyseg_core.evaluate", "--checkpoint",
                           str(tiny_student), "--subsets", "camera,lidar", "events",
                           "--missing", "zero", "--num-samples", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rep = json.loads((out / "anymodal.json").read_text())
    assert list(rep["subsets"]) == ["CL", "E"] and rep["protocol"]["missing"] == "zero"
    bad = subprocess.run([sys.executable, "-m", "anyseg_core.evaluate", "--checkpoint",
                          str(tmp_path / "nothing.safetensors"), "--out", str(out)],
                         capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert bad.returncode == 2 and "nothing.safetensors" in bad.stderr
    # Sizes and counts that cannot work are usage errors naming the value, not a crash later.
    from anyseg_core.evaluate import main
    for args, message in ((["--size", "0x64"], "positive and divisible by 32"),
                          (["--num-samples", "0"], "--num-samples must be at least 1"),
                          (["--dataset", "muses", "--root", str(tmp_path / "no_muses")],
                           "no_muses")):
        with pytest.raises(SystemExit) as exit_info:
            main(["--checkpoint", str(tiny_student), "--device", "cpu", "--subsets", "C",
                  "--out", str(tmp_path / "never"), *args])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_runtime_takes_inputs_of_any_float_dtype(tiny_student):
    rt = Runtime(tiny_student, device="cpu", warmup=False)
    H, W = rt.input_size
    x = torch.rand(3, H, W, generator=torch.Generator().manual_seed(0))
    a = rt.predict({"camera": x}).labels
    assert torch.equal(rt.predict({"camera": x.double()}).labels, a)


def test_runtime_predicts_from_raw_frames_and_prepared_inputs_alike(tiny_student):
    rt = Runtime(tiny_student, device="cpu")
    assert rt.modalities == MODS and rt.input_size == (64, 96)
    ds = SyntheticDataset(1, split="val", size_hw=(64, 96), modalities=MODS)
    frame, item = ds.raw(0), ds[0]
    from_raw = rt.predict(frame, confidence=True)
    from_inputs = rt.predict(item["inputs"], confidence=True)
    assert from_raw.labels.dtype == torch.uint8 and from_raw.labels.shape == (64, 96)
    assert torch.equal(from_raw.labels, from_inputs.labels)
    assert from_raw.modalities == MODS
    conf = from_raw.confidence
    assert conf.dtype == torch.float32 and (conf > 0).all() and (conf <= 1).all()
    # any subset; resized output; low confidence -> 255
    only_lidar = rt.predict({"lidar": item["inputs"]["lidar"]}, output_size=(128, 192))
    assert only_lidar.labels.shape == (128, 192) and only_lidar.modalities == ("lidar",)
    strict = Runtime(tiny_student, device="cpu", warmup=False, min_confidence=1.01)
    assert (strict.predict(item["inputs"]).labels == 255).all()
    colours = rt.colorize(from_raw.labels)
    assert colours.shape == (64, 96, 3) and colours.dtype == torch.uint8


def test_runtime_refuses_bad_settings_clearly(tiny_student):
    with pytest.raises(ValueError, match="precision"):
        Runtime(tiny_student, precision="int8", warmup=False)
    with pytest.raises(ValueError, match="fp16 needs a CUDA"):
        Runtime(tiny_student, device="cpu", precision="fp16", warmup=False)
    with pytest.raises(ValueError, match="device"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda:0")
    rt = Runtime(tiny_student, device="cpu", warmup=False)
    with pytest.raises(ValueError, match="depth"):
        rt.predict({"depth": torch.zeros(3, 64, 96)})
    with pytest.raises(ValueError, match="at least one"):
        rt.predict({})
    # A checkpoint trained on inputs normalised otherwise (DELIVER's LiDAR images: mean 0,
    # std 1) cannot read raw LiDAR points: refused by name, while the camera, normalised the
    # raw-sensor way, still goes through.
    frame = SyntheticDataset(1, split="val", size_hw=(64, 96), modalities=MODS).raw(0)
    assert set(rt.prepare(frame)) == set(MODS)
    rt.meta["normalization"]["lidar"] = {"mean": [0.0] * 3, "std": [1.0] * 3}
    with pytest.raises(ValueError, match=r"trained on lidar inputs normalised as"):
        rt.predict(frame)
    frame.lidar = None
    assert "camera" in rt.prepare(frame)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_runtime_on_cuda_matches_cpu(tiny_student):
    ds = SyntheticDataset(1, split="val", size_hw=(64, 96), modalities=MODS)
    frame = ds.raw(0)
    cpu = Runtime(tiny_student, device="cpu").predict(frame).labels
    gpu = Runtime(tiny_student, device="cuda").predict(frame).labels.cpu()
    assert (cpu == gpu).float().mean() > 0.99


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_runtime_upload_through_pinned_buffers_on_cuda(tiny_student):
    """The node's upload path: arrays reach the GPU intact, a buffer reused for the next
    frame (of another size) never overwrites the copy of the previous one, and dtypes stay."""
    rt = Runtime(tiny_student, device="cuda", warmup=False)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, hw + (3,), dtype=np.uint8)
              for hw in ((48, 64), (48, 64), (96, 128))]
    # the second reuses the first's pinned buffer (after its copy is done), the third grows it
    on_gpu = [rt.upload("camera", f) for f in frames]
    torch.cuda.synchronize()
    for f, g in zip(frames, on_gpu):
        assert g.device.type == "cuda" and g.dtype == torch.uint8
        np.testing.assert_array_equal(g.cpu().numpy(), f)
    t = np.linspace(1.7e9, 1.7e9 + 0.03, 1000)  # float64 UNIX times keep their precision
    np.testing.assert_array_equal(rt.upload("events_t", t).cpu().numpy(), t)
    points = rng.normal(size=(500, 4)).astype(np.float32)[::2]  # not contiguous
    np.testing.assert_array_equal(rt.upload("lidar", points).cpu().numpy(), points)


def test_a_real_dataset_without_its_root_is_one_line(tmp_path, capsys):
    """evaluate --dataset muses without --root: the registry says MUSES is read from a folder,
    so the command stops at once with one line (it used to end in a traceback)."""
    from anyseg_core.evaluate import main
    with pytest.raises(SystemExit) as info:
        main(["--checkpoint", str(tmp_path / "any.safetensors"), "--dataset", "muses",
              "--out", str(tmp_path / "out")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--dataset muses needs --root" in err and "Traceback" not in err
