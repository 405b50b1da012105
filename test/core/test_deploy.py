"""Exported backends agree with PyTorch, subset by subset (anyseg_core.deploy).

A tiny checkpoint from the project's training command is exported once (one static ONNX
graph per modality subset) and run by ONNX Runtime and OpenVINO; for every subset their
labels on real frames of the synthetic world must equal PyTorch's on at least 99.9 % of the
pixels. The check itself is shown to catch the classic wrong export: a graph that ignores
which modalities are present (absent ones averaged in as zeros) looks right with every
modality and wrong without.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="the deploy extra is not installed (pip install .[deploy])")
pytest.importorskip("onnxruntime", reason="the deploy extra is not installed")
pytest.importorskip("openvino", reason="the deploy extra is not installed")

from anyseg_core import deploy  # noqa: E402
from anyseg_core.checkpoint import CheckpointError, build_model  # noqa: E402
from anyseg_core.data.synthetic.dataset import SyntheticDataset  # noqa: E402
from anyseg_core.export import main as export_main  # noqa: E402
from anyseg_core.modalities import all_subsets  # noqa: E402
from anyseg_core.runtime import Runtime  # noqa: E402

AGREEMENT = 0.999
REPO_ROOT = Path(__file__).resolve().parents[2]
# The wrong export below uses the TorchScript exporter, which announces its deprecation.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def exported(tiny_teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny.onnx"
    assert export_main([str(tiny_teacher), "--format", "onnx", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def frames(tiny_teacher):
    meta = build_model(tiny_teacher)[1]
    data = SyntheticDataset(num_samples=3, split="val", seed=5, size_hw=meta["input_size"],
                            modalities=meta["modalities"])
    return [data.raw(i) for i in range(3)]


@pytest.fixture(scope="module")
def reference(tiny_teacher):
    return Runtime(tiny_teacher, device="cpu", warmup=False)


def test_the_export_holds_a_graph_per_subset_and_the_checkpoint_s_metadata(exported,
                                                                           tiny_teacher):
    meta = build_model(tiny_teacher)[1]
    info = deploy.read_export(exported)
    assert set(info["subsets"]) == {deploy.subset_key(s) for s in all_subsets(meta["modalities"])}
    assert info["checkpoint_sha256"] == deploy.file_sha256(tiny_teacher)
    assert info["meta"]["class_names"] == meta["class_names"]
    assert info["meta"]["palette"] == meta["palette"]
    assert info["meta"]["normalization"] == meta["normalization"]
    assert info["input_size"] == list(meta["input_size"])
    import onnx
    camera = onnx.load(str(exported / "camera.onnx"))
    assert [i.name for i in camera.graph.input] == ["camera"]  # nothing for absent ones
    assert [o.name for o in camera.graph.output] == ["labels", "confidence"]
    props = {p.key: p.value for p in camera.metadata_props}
    assert json.loads(props["anyseg"])["checkpoint_sha256"] == info["checkpoint_sha256"]
    # The weights are stored once for the 7 graphs, not once per graph.
    weights = sum(t.numel() * 4 for t in build_model(tiny_teacher)[0].state_dict().values())
    total = sum(f.stat().st_size for f in exported.iterdir())
    assert total < 2 * weights, (total, weights)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_every_subset_agrees_with_pytorch(exported, frames, reference, backend):
    candidate = Runtime(exported, device="cpu", backend=backend, warmup=False)
    assert candidate.class_names == reference.class_names
    assert candidate.modalities == reference.modalities
    scores = deploy.agreement(reference, candidate, frames)
    assert len(scores) == 2 ** len(reference.modalities) - 1
    assert min(scores.values()) >= AGREEMENT, scores
    # and the confidence too, on one frame with every modality
    x = reference.prepare(frames[0])
    a = reference.predict(x, confidence=True)
    b = candidate.predict(x, confidence=True)
    np.testing.assert_allclose(b.confidence.numpy(), a.confidence.numpy(), atol=1e-4)


@pytest.fixture(scope="module")
def tiny_primary(tmp_path_factory):
    """A tiny checkpoint with ``fusion: primary`` (the first modality's features plus a
    projection of the others'): unlike mean fusion it is not symmetric in its inputs, so a
    graph that feeds one modality's data where another's belongs gives other outputs."""
    from anyseg_core.config import load_config
    from anyseg_core.train import train

    out = tmp_path_factory.mktemp("tiny_primary")
    checkpoint = train(load_config(REPO_ROOT / "config" / "train_tiny.yaml", [
        f"out_dir={out}", "model.fusion=primary", "train.eval_samples=1"]))
    assert build_model(checkpoint)[1]["fusion"] == "primary"
    return checkpoint


@pytest.fixture(scope="module")
def primary_exported(tiny_primary, tmp_path_factory):
    return deploy.export_onnx(tiny_primary, tmp_path_factory.mktemp("export") / "primary.onnx")


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_an_asymmetric_fusion_s_subset_graphs_take_each_input_by_its_name(
        tiny_primary, primary_exported, frames, backend):
    reference = Runtime(tiny_primary, device="cpu", warmup=False)
    candidate = Runtime(primary_exported, device="cpu", backend=backend, warmup=False)
    scores = deploy.agreement(reference, candidate, frames)
    assert min(scores.values()) >= AGREEMENT, scores
    prepared = [reference.prepare(f) for f in frames]
    for subset in all_subsets(reference.modalities):
        for inputs in prepared:
            x = {m: inputs[m] for m in subset}
            a = reference.predict(x, confidence=True).confidence.numpy()
            b = candidate.predict(x, confidence=True).confidence.numpy()
            np.testing.assert_allclose(b, a, atol=1e-4, err_msg=deploy.subset_key(subset))


class _MaskIgnoringGraph(deploy.SubsetGraph):
    """A wrong export: every modality enters the mean, absent ones as zero features (what a
    graph traced with all modalities and fed zeros for the missing ones computes)."""

    def forward(self, *inputs):
        self.weight = torch.ones_like(self.weight)
        return super().forward(*inputs)


def test_the_agreement_check_catches_an_export_that_ignores_the_present_mask(
        exported, frames, reference, tmp_path):
    bad = tmp_path / "bad.onnx"
    shutil.copytree(exported, bad)
    model, size = reference.model, tuple(reference.meta["input_size"])
    for subset in all_subsets(reference.modalities):
        graph = _MaskIgnoringGraph(model, subset, size).eval()
        with torch.no_grad():
            torch.onnx.export(graph, tuple(torch.zeros(1, 3, *size) for _ in subset),
                              str(bad / f"{deploy.subset_key(subset)}.onnx"), dynamo=False,
                              input_names=list(subset), output_names=list(deploy.OUTPUTS))
    candidate = Runtime(bad, device="cpu", backend="onnxruntime", warmup=False)
    scores = deploy.agreement(reference, candidate, frames)
    full = deploy.subset_key(reference.modalities)
    assert scores[full] >= AGREEMENT, scores  # right with every modality ...
    assert min(scores.values()) < AGREEMENT, scores  # ... and the check sees the rest


def test_a_checkpoint_is_exported_once_and_the_export_reused(tiny_teacher, tmp_path,
                                                             monkeypatch):
    monkeypatch.setenv("ANYSEG_CACHE", str(tmp_path / "cache"))
    first = Runtime(tiny_teacher, device="cpu", backend="onnxruntime", warmup=False)
    made = sorted(p.stat().st_mtime_ns for p in first.export_path.iterdir())
    again = Runtime(tiny_teacher, device="cpu", backend="openvino", warmup=False)
    assert again.export_path == first.export_path
    assert sorted(p.stat().st_mtime_ns for p in again.export_path.iterdir()) == made
    assert deploy.read_export(first.export_path)["checkpoint_sha256"] == \
        deploy.file_sha256(tiny_teacher)


def test_wrong_uses_stop_with_a_message_naming_them(exported, tiny_teacher, tmp_path):
    with pytest.raises(ValueError, match="exported model"):
        Runtime(exported, device="cpu", backend="torch", warmup=False)
    with pytest.raises(ValueError, match="exported at"):
        Runtime(exported, device="cpu", backend="onnxruntime", input_size=(96, 128),
                warmup=False)
    with pytest.raises(ValueError, match="fp32 only"):
        Runtime(exported, device="cpu", backend="onnxruntime", precision="bf16", warmup=False)
    with pytest.raises(ValueError, match="backend must be one of"):
        Runtime(tiny_teacher, device="cpu", backend="tensorflow", warmup=False)
    broken = tmp_path / "broken.onnx"
    shutil.copytree(exported, broken)
    (broken / "camera.onnx").unlink()
    with pytest.raises(CheckpointError, match="camera.onnx"):
        Runtime(broken, device="cpu", backend="onnxruntime", warmup=False)
    assert export_main([str(tiny_teacher), "--format", "onnx", "--out", str(exported)]) == 2


def test_the_dynamo_exporter_gives_the_same_labels(tiny_teacher, frames, reference, tmp_path):
    out = deploy.export_onnx(tiny_teacher, tmp_path / "dynamo.onnx", subsets=[("camera",)],
                             exporter="dynamo")
    candidate = Runtime(out, device="cpu", backend="onnxruntime", warmup=False)
    assert candidate.engine.sessions.keys() == {"camera"}
    scores = deploy.agreement(reference, candidate, frames, subsets=[("camera",)])
    assert scores["camera"] >= AGREEMENT, scores


def test_auto_takes_the_fastest_installed_backend_that_runs_the_precision():
    from anyseg_core.runtime import resolve_backend
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu) == "openvino"  # docs/benchmarks.md
    assert resolve_backend("auto", cpu, "bf16") == "openvino"
    assert resolve_backend("auto", cpu, exported=True) == "openvino"
    assert resolve_backend("torch", cpu) == "torch"
    assert resolve_backend("onnxruntime", cpu) == "onnxruntime"
