"""The anymodal segmentor: shapes, fusion, one-pass encoding, every subset, errors."""
from __future__ import annotations

import pytest
import torch

from anyseg_core.modalities import all_subsets
from anyseg_core.model import AnymodalSegmentor

MODS = ("camera", "events", "lidar")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return AnymodalSegmentor(MODS, num_classes=19, embed_dim=32).eval()


def inputs(b=2, h=64, w=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(b, 3, h, w, generator=g) for m in MODS}


@pytest.mark.parametrize("subset", all_subsets(MODS), ids="+".join)
def test_batch_of_one_with_every_subset(model, subset):
    x = {m: v[:1] for m, v in inputs().items() if m in subset}
    out = model(x)
    assert out.logits.shape == (1, 19, 64, 96)
    assert out.present.tolist() == [[m in subset for m in MODS]]
    for s, (f, fused) in enumerate(zip(out.features, out.fused)):
        assert f.shape[:2] == (1, 3)
        for j, m in enumerate(MODS):
            assert (f[0, j].abs().sum() > 0) == (m in subset), (s, m)
        idx = [MODS.index(m) for m in subset]
        torch.testing.assert_close(fused[0], f[0, idx].mean(0))


def test_a_sample_does_not_depend_on_the_rest_of_the_batch(model):
    """All present pairs are encoded in one pass, yet each sample's output is what it would
    be alone (eval mode): nothing mixes samples or leaks from absent modalities."""
    x = inputs(b=3)
    present = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 1]], dtype=torch.bool)
    batch = model(x, present)
    for b in range(3):
        alone = model({m: v[b:b + 1] for m, v in x.items()}, present[b:b + 1])
        torch.testing.assert_close(batch.logits[b:b + 1], alone.logits, atol=1e-4, rtol=1e-4)
        for s in range(4):
            torch.testing.assert_close(batch.fused[s][b:b + 1], alone.fused[s], atol=1e-4,
                                       rtol=1e-4)


def test_the_encoder_runs_once_on_exactly_the_present_pairs(model):
    calls = []
    hook = model.encoder.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape))
    try:
        model(inputs(b=4), torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1], [1, 1, 1]]).bool())
    finally:
        hook.remove()
    assert calls == [torch.Size([7, 3, 64, 96])]


def test_zero_filling_protocol_differs_from_dropping(model):
    x = inputs(b=1)
    present = torch.tensor([[True, False, False]])
    drop = model(x, present)
    zero = model(x, present, missing="zero")
    assert zero.present.all()
    assert not torch.allclose(drop.logits, zero.logits)
    torch.testing.assert_close(drop.logits, model({"camera": x["camera"]}).logits)
    # absent modalities are zeros even when their data is passed in: nothing leaks
    zeros = {m: (v if m == "camera" else torch.zeros_like(v)) for m, v in x.items()}
    torch.testing.assert_close(zero.logits, model(zeros, missing="zero").logits)
    torch.testing.assert_close(zero.logits,
                               model({"camera": x["camera"]}, missing="zero").logits)
    assert not torch.allclose(zero.logits, model(x).logits)


def test_features_are_each_pairs_own_encoding(model):
    x = inputs(b=3)
    present = torch.tensor([[1, 0, 1], [0, 1, 1], [1, 1, 0]]).bool()
    out = model(x, present)
    for b in range(3):
        for m, name in enumerate(MODS):
            for s, f in enumerate(out.features):
                if present[b, m]:
                    alone = model.encoder(x[name][b:b + 1])[s][0]
                    torch.testing.assert_close(f[b, m], alone, atol=1e-4, rtol=1e-4)
                else:
                    assert not f[b, m].any()


def test_camera_primary_baseline_fusion():
    torch.manual_seed(0)
    net = AnymodalSegmentor(MODS, 19, embed_dim=32, fusion="primary").eval()
    out = net(inputs(b=2))
    assert out.logits.shape == (2, 19, 64, 96)
    x = inputs(b=1)
    feats = {m: net.encoder(x[m]) for m in MODS}
    for subset in [("camera",), ("camera", "events"), ("events",), ("events", "lidar"),
                   MODS]:
        out = net({m: x[m] for m in subset})
        for s in range(4):
            # the primary's features plus the projection of the present others' mean (a
            # missing one is left out of the mean, not counted as zeros); no primary: zeros
            others = [feats[m][s] for m in subset if m != "camera"]
            aux = (net.aux_proj[s](torch.stack(others).mean(0)) if others
                   else torch.zeros_like(feats["camera"][s]))
            primary = feats["camera"][s] if "camera" in subset else 0.0
            torch.testing.assert_close(out.fused[s], primary + aux, atol=1e-4, rtol=1e-4)


def test_any_timm_backbone_with_four_levels():
    net = AnymodalSegmentor(("camera", "lidar"), 5, backbone="resnet18", embed_dim=16)
    assert net.channels == [64, 128, 256, 512]  # resnet's stride-2 level is skipped
    out = net({"lidar": torch.randn(1, 3, 64, 64)})
    assert out.logits.shape == (1, 5, 64, 64)
    with pytest.raises(ValueError, match="no_such_net"):
        AnymodalSegmentor(MODS, 19, backbone="no_such_net")


def test_gradients_reach_the_shared_encoder_from_every_modality(model):
    net = AnymodalSegmentor(MODS, 19, embed_dim=16).train()
    first = next(p for p in net.encoder.parameters() if p.requires_grad)  # the stem
    for name in MODS:
        net.zero_grad(set_to_none=True)
        net({name: torch.randn(2, 3, 64, 64)}).logits.sum().backward()
        assert first.grad is not None and first.grad.abs().sum() > 0, name


def test_bad_inputs_fail_with_clear_messages(model):
    x = inputs(b=1)
    with pytest.raises(ValueError, match="divisible by 32"):
        model({"camera": torch.randn(1, 3, 60, 96)})
    with pytest.raises(ValueError, match="at least one present"):
        model(x, torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="depth"):
        model({"depth": torch.randn(1, 3, 64, 64)})
    with pytest.raises(ValueError, match="no 'lidar'"):
        model({"camera": x["camera"]}, torch.tensor([[True, False, True]]))
    with pytest.raises(ValueError, match="same B, H, W"):
        model({"camera": x["camera"], "lidar": torch.randn(2, 3, 64, 96)})
    with pytest.raises(ValueError, match="fusion"):
        AnymodalSegmentor(MODS, 19, fusion="sum")
