"""The training losses (anyseg_core.losses): values, masking, averaging, gradients, dtypes.

Averaging contract under test (see the module docstring): every term of a batch equals the
plain mean of the same term computed on each sample alone -- for L_sup / L_mad over the
samples that have a valid pixel, whatever their numbers of valid pixels; for L_umd over
the samples, whatever their numbers of present modalities; for L_cmd over all samples, a
sample with fewer than two present modalities counting as 0.
"""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from anyseg_core.losses import (AnySegLoss, crossmodal_distillation, fused_feature_distillation,
                                prediction_distillation, supervised_loss, unimodal_distillation)
from anyseg_core.modalities import IGNORE_INDEX

# (C, H, W) of 4 small stages; real models use 32/64/160/256 channels at strides 4..32.
STAGES = ((6, 8, 8), (8, 4, 4), (10, 2, 2), (12, 1, 1))
K = 5


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def feats(B, M, g, stages=STAGES, scale=1.0):
    return [scale * torch.randn(B, M, c, h, w, generator=g) for c, h, w in stages]


def fused(B, g, stages=STAGES):
    return [torch.randn(B, c, h, w, generator=g) for c, h, w in stages]


def logits_and_labels(B, g, H=6, W=7, ignore_frac=0.3):
    logits = 2 * torch.randn(B, K, H, W, generator=g)
    labels = torch.randint(0, K, (B, H, W), generator=g)
    labels[torch.rand(B, H, W, generator=g) < ignore_frac] = IGNORE_INDEX
    return logits, labels


def present_mask(rows):
    return torch.tensor(rows, dtype=torch.bool)


def close(a, b, tol=1e-5):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return torch.allclose(a, b, rtol=tol, atol=tol)


def requires_grad(ts):
    return [t.clone().requires_grad_(True) for t in ts]


# Each feature loss as f(student, teacher, present) so tests can loop over them.
def umd(s, t, p, tau=1.0):
    return unimodal_distillation(s, t, p, tau=tau)


def cmd(s, t, p, tau=1.0):
    return crossmodal_distillation(s, t, p, tau=tau)


FEATURE_LOSSES = {"umd": umd, "cmd": cmd}


# --------------------------------------------------------------- reference implementations
# Straightforward per-sample loops in float64, written independently of the vectorised code.
def kl_1d(student, teacher, tau):
    """KL(softmax(teacher/tau) || softmax(student/tau)) along dim 0, averaged over its C
    entries (the authors' KLDivLoss(reduction='mean') scale)."""
    log_s = torch.log_softmax(student / tau, dim=0)
    log_t = torch.log_softmax(teacher / tau, dim=0)
    return (log_t.exp() * (log_t - log_s)).sum(0) / student.shape[0]


def ref_umd(s_feats, t_feats, present, tau=1.0):
    total = 0.0
    for s, t in zip(s_feats, t_feats):
        B, M = s.shape[:2]
        per_sample = []
        for b in range(B):
            vals = [kl_1d(s[b, m].double(), t[b, m].double(), tau).mean()
                    for m in range(M) if present[b, m]]
            per_sample.append(sum(vals) / len(vals))
        total += sum(per_sample) / B
    return total * tau ** 2


def ref_cmd(s_feats, t_feats, present, tau=1.0):
    total = 0.0
    for s, t in zip(s_feats, t_feats):
        B, M = s.shape[:2]
        per_sample = []
        for b in range(B):
            vals = []
            for a in range(M):
                for c in range(a + 1, M):
                    if not (present[b, a] and present[b, c]):
                        continue
                    cs = F.cosine_similarity(s[b, a].double().flatten(1),
                                             s[b, c].double().flatten(1), dim=1)
                    ct = F.cosine_similarity(t[b, a].double().flatten(1),
                                             t[b, c].double().flatten(1), dim=1)
                    vals.append(kl_1d(cs, ct, tau))
            per_sample.append(sum(vals) / len(vals) if vals else 0.0)
        total += sum(per_sample) / B
    return total * tau ** 2


REFERENCES = {"umd": ref_umd, "cmd": ref_cmd}


@st.composite
def random_cases(draw):
    B = draw(st.integers(1, 3))
    M = draw(st.integers(1, 4))
    rows = []
    for _ in range(B):
        row = draw(st.lists(st.booleans(), min_size=M, max_size=M))
        if not any(row):
            row[draw(st.integers(0, M - 1))] = True
        rows.append(row)
    stages = tuple((draw(st.integers(1, 6)), draw(st.integers(1, 4)), draw(st.integers(1, 4)))
                   for _ in range(draw(st.integers(1, 4))))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    tau = draw(st.sampled_from([0.5, 1.0, 2.0]))
    g = gen(seed)
    s = feats(B, M, g, stages)
    t = feats(B, M, g, stages)
    return s, t, present_mask(rows), tau


# ================================================================== 1. zero iff equal
@pytest.mark.parametrize("name", ["umd", "cmd"])
def test_feature_losses_zero_when_equal_positive_otherwise(name):
    fn = FEATURE_LOSSES[name]
    g = gen(1)
    s, t = feats(2, 3, g), feats(2, 3, g)
    p = present_mask([[True, True, False], [True, True, True]])
    same = fn(s, [x.clone() for x in s], p)
    assert same.dim() == 0 and abs(float(same)) < 1e-6
    assert float(fn(s, t, p)) > 1e-4


def test_prediction_and_fused_zero_when_equal_positive_otherwise():
    g = gen(2)
    logits, labels = logits_and_labels(2, g)
    other = logits + torch.randn(logits.shape, generator=g)
    assert abs(float(prediction_distillation(logits, logits.clone(), labels))) < 1e-6
    assert abs(float(prediction_distillation(logits, logits.clone()))) < 1e-6
    assert float(prediction_distillation(logits, other, labels)) > 1e-4
    fs, ft = fused(2, g), fused(2, g)
    assert abs(float(fused_feature_distillation(fs, [x.clone() for x in fs]))) < 1e-6
    assert float(fused_feature_distillation(fs, ft)) > 1e-4


def test_umd_softmax_is_over_channels_not_height():
    """Adding a per-position constant to every channel leaves a channel softmax unchanged
    (so L_umd stays 0); a softmax over the height axis (the proxy code's bug) would not."""
    g = gen(3)
    t = feats(2, 2, g)
    shift = [torch.randn(x.shape[0], x.shape[1], 1, *x.shape[3:], generator=g) * 3 for x in t]
    s = [x + d for x, d in zip(t, shift)]
    p = torch.ones(2, 2, dtype=torch.bool)
    assert abs(float(unimodal_distillation(s, t, p))) < 1e-6
    assert abs(float(fused_feature_distillation([x[:, 0] for x in s], [x[:, 0] for x in t]))) < 1e-6
    # ... while a per-channel shift (same at every position) is seen.
    s2 = [x + torch.randn(x.shape[0], x.shape[1], x.shape[2], 1, 1, generator=g) for x in t]
    assert float(unimodal_distillation(s2, t, p)) > 1e-4


def test_cmd_compares_channel_cosines():
    """Scaling a modality's maps by a positive factor keeps every cosine: L_cmd stays 0."""
    g = gen(4)
    t = feats(2, 3, g)
    s = [x * torch.tensor([0.5, 2.0, 7.0]).view(1, 3, 1, 1, 1) for x in t]
    p = torch.ones(2, 3, dtype=torch.bool)
    assert abs(float(crossmodal_distillation(s, t, p))) < 1e-6
    assert float(unimodal_distillation(s, t, p)) > 1e-4  # the unimodal term does see it


def test_mad_is_the_authors_kldivloss_mean_with_tau_squared():
    """At batch 1 with no ignored pixel, L_mad is the mean over all K x H x W entries of the
    pointwise KL terms: what the authors' KLDivLoss(reduction='mean') computed (spelt out:
    newer torch warns that 'mean' will change meaning). reduction='sum' is the per-pixel KL,
    K times larger: the earlier scale."""
    g = gen(5)
    s, t = torch.randn(1, K, 3, 4, generator=g), torch.randn(1, K, 3, 4, generator=g)
    labels = torch.randint(0, K, (1, 3, 4), generator=g)
    for tau in (1.0, 2.0, 4.0):
        pointwise = F.kl_div(F.log_softmax(s / tau, 1), F.softmax(t / tau, 1), reduction="none")
        assert pointwise.shape == (1, K, 3, 4)
        expected = pointwise.mean() * tau ** 2
        assert close(prediction_distillation(s, t, tau=tau), expected)
        assert close(prediction_distillation(s, t, labels, tau=tau), expected)
        assert close(prediction_distillation(s, t, tau=tau, reduction="sum"), expected * K)
    with pytest.raises(ValueError, match="kl_reduction"):
        prediction_distillation(s, t, reduction="batchmean")


@pytest.mark.parametrize("name", ["umd", "cmd", "fkd"])
def test_feature_terms_average_over_channels_and_sum_is_c_times(name):
    """L_umd, L_cmd and L_fkd divide each position's (pair's) KL by the stage's channels C;
    with reduction='sum' each stage is C times larger (stages of different C)."""
    g = gen(15)
    s, t = feats(2, 3, g), feats(2, 3, g)
    p = present_mask([[True, True, False], [True, True, True]])
    fn = {"umd": unimodal_distillation, "cmd": crossmodal_distillation}.get(name)
    per_stage = []
    for i, (c, _, _) in enumerate(STAGES):
        if fn is None:
            args = ([s[i][:, 0]], [t[i][:, 0]])
            mean = fused_feature_distillation(*args)
            total = fused_feature_distillation(*args, reduction="sum")
        else:
            mean = fn([s[i]], [t[i]], p)
            total = fn([s[i]], [t[i]], p, reduction="sum")
        assert float(mean) > 0 and close(total, c * mean)
        per_stage.append(mean)
    whole = (fused_feature_distillation([x[:, 0] for x in s], [x[:, 0] for x in t])
             if fn is None else fn(s, t, p))
    assert close(whole, sum(per_stage))


def test_mad_teacher_correct_counts_only_where_the_teacher_is_right():
    """mad_pixels='teacher_correct': the KL of the pixels where the teacher's argmax is the
    label, averaged over every valid pixel (a wrong pixel weighs 0, a right one as before)."""
    g = gen(16)
    s, t = torch.randn(2, K, 4, 5, generator=g), torch.randn(2, K, 4, 5, generator=g)
    labels = torch.randint(0, K, (2, 4, 5), generator=g)
    right = t.argmax(1) == labels
    labels[0, 0, :2] = IGNORE_INDEX
    assert right.any() and (~right).any()
    pointwise = F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="none").mean(1)
    valid = labels != IGNORE_INDEX
    expected = torch.stack([torch.where(valid[b] & right[b], pointwise[b], 0.0).sum()
                            / valid[b].sum() for b in range(2)]).mean()
    got = prediction_distillation(s, t, labels, pixels="teacher_correct")
    assert close(got, expected)
    # Where the teacher is right everywhere, it is the paper's L_mad.
    agree = t.argmax(1)
    assert close(prediction_distillation(s, t, agree, pixels="teacher_correct"),
                 prediction_distillation(s, t, agree))
    # ... and no gradient flows from the pixels where it is wrong.
    s_req = s.clone().requires_grad_(True)
    prediction_distillation(s_req, t, labels, pixels="teacher_correct").backward()
    wrong = (~right & valid).unsqueeze(1).expand_as(s)
    assert s_req.grad[wrong].abs().max() == 0 and s_req.grad[~wrong].abs().max() > 0
    with pytest.raises(ValueError, match="needs the labels"):
        prediction_distillation(s, t, pixels="teacher_correct")
    loss = AnySegLoss(alpha_umd=0, beta_cmd=0, mad_pixels="teacher_correct")
    out = loss(SimpleNamespace(logits=s), SimpleNamespace(logits=t), labels)
    assert close(out["mad"], got)


def test_supervised_loss_matches_cross_entropy_for_one_sample():
    g = gen(6)
    logits, labels = logits_and_labels(1, g)
    assert close(supervised_loss(logits, labels),
                 F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX))


# ================================================================== 2. gradients
def test_no_gradient_reaches_the_teacher():
    g = gen(7)
    p = present_mask([[True, False, True], [True, True, True]])
    logits, labels = logits_and_labels(2, g)
    s_feats, t_feats = requires_grad(feats(2, 3, g)), requires_grad(feats(2, 3, g))
    s_fused, t_fused = requires_grad(fused(2, g)), requires_grad(fused(2, g))
    s_logits = logits.clone().requires_grad_(True)
    t_logits = torch.randn(logits.shape, generator=g).requires_grad_(True)
    cases = {
        "mad": (lambda: prediction_distillation(s_logits, t_logits, labels), [s_logits],
                [t_logits]),
        "umd": (lambda: unimodal_distillation(s_feats, t_feats, p), s_feats, t_feats),
        "cmd": (lambda: crossmodal_distillation(s_feats, t_feats, p), s_feats, t_feats),
        "fkd": (lambda: fused_feature_distillation(s_fused, t_fused), s_fused, t_fused),
    }
    for name, (fn, students, teachers) in cases.items():
        for x in students + teachers:
            x.grad = None
        fn().backward()
        assert all(x.grad is None for x in teachers), name
        assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in students), name

    # The whole loss, with a teacher that still carries a graph (caller forgot no_grad).
    w = torch.ones((), requires_grad=True)
    teacher = SimpleNamespace(logits=t_logits * w, features=[x * w for x in t_feats],
                              fused=[x * w for x in t_fused])
    student = SimpleNamespace(logits=s_logits, features=s_feats, fused=s_fused)
    s_logits.grad = None
    AnySegLoss(gamma_fkd=1.0)(student, teacher, labels, p)["loss"].backward()
    assert w.grad is None and t_logits.grad is None
    assert s_logits.grad is not None and s_logits.grad.abs().sum() > 0


# ================================================================== 3. absent modalities
@pytest.mark.parametrize("name", ["umd", "cmd"])
@pytest.mark.parametrize("garbage", ["random", "nonfinite"])
def test_absent_modalities_contribute_nothing(name, garbage):
    fn = FEATURE_LOSSES[name]
    g = gen(8)
    p = present_mask([[True, False, True, False], [False, True, True, True],
                      [False, False, True, False]])
    s, t = feats(3, 4, g), feats(3, 4, g)
    for x in s + t:  # absent entries are zeros, as the model writes them
        x[~p] = 0
    ref = fn(s, t, p)
    s_bad, t_bad = [x.clone() for x in s], [x.clone() for x in t]
    for x in s_bad + t_bad:
        junk = 1e3 * torch.randn(x[~p].shape, generator=g)
        if garbage == "nonfinite":
            junk.view(-1)[::3] = float("nan")
            junk.view(-1)[1::3] = float("inf")
        x[~p] = junk
    s_bad = requires_grad(s_bad)
    val = fn(s_bad, t_bad, p)
    assert torch.isfinite(val) and close(val, ref, 1e-6)
    val.backward()
    for x in s_bad:
        assert torch.isfinite(x.grad).all()
        assert (x.grad[~p] == 0).all()  # no gradient into absent entries
        assert x.grad[p].abs().sum() > 0


def test_absent_modalities_ignored_by_anysegloss():
    g = gen(9)
    p = present_mask([[True, False, False], [False, True, True]])
    logits, labels = logits_and_labels(2, g)
    t_logits = torch.randn(logits.shape, generator=g)
    s, t = feats(2, 3, g), feats(2, 3, g)
    loss = AnySegLoss()
    a = loss(SimpleNamespace(logits=logits, features=s, fused=None),
             SimpleNamespace(logits=t_logits, features=t, fused=None), labels, p)
    s2, t2 = [x.clone() for x in s], [x.clone() for x in t]
    for x in s2 + t2:
        x[~p] = 50 * torch.randn(x[~p].shape, generator=g)
    b = loss(SimpleNamespace(logits=logits, features=s2, fused=None),
             SimpleNamespace(logits=t_logits, features=t2, fused=None), labels, p)
    for k in a:
        assert close(a[k], b[k], 1e-6), k


# ================================================================== 4. pairs stay in their sample
def test_cmd_pairs_never_mix_samples():
    g = gen(10)
    s, t = feats(2, 3, g), feats(2, 3, g)
    # Sample 0 has only modality 0, sample 1 only modality 1: no pair anywhere. An
    # implementation pairing across the batch (the proxy code's bug) would find one.
    assert float(crossmodal_distillation(s, t, present_mask([[True, False, False],
                                                             [False, True, False]]))) == 0.0
    p = torch.ones(2, 3, dtype=torch.bool)
    before = crossmodal_distillation(s, t, p)
    # Swap modality 1 between the two samples, in the student and the teacher alike.
    s2, t2 = [x.clone() for x in s], [x.clone() for x in t]
    for new, old in zip(s2 + t2, s + t):
        new[0, 1], new[1, 1] = old[1, 1], old[0, 1]
    after = crossmodal_distillation(s2, t2, p)
    assert abs(float(after - before)) > 1e-5  # the pairs really changed ...
    singles = [crossmodal_distillation([x[i:i + 1] for x in s2], [x[i:i + 1] for x in t2],
                                       p[i:i + 1]) for i in range(2)]
    assert close(after, (singles[0] + singles[1]) / 2)  # ... and each sample stays on its own
    assert close(after, ref_cmd(s2, t2, p))


@pytest.mark.parametrize("name", ["umd", "cmd"])
@settings(max_examples=25, deadline=None)
@given(case=random_cases())
def test_vectorised_equals_per_sample_reference(name, case):
    s, t, p, tau = case
    fn, ref = FEATURE_LOSSES[name], REFERENCES[name]
    val = fn(s, t, p, tau=tau)
    assert val.dtype == torch.float32 and val.dim() == 0
    assert close(val, ref(s, t, p, tau), 1e-5)
    # The batch value is the mean of the samples' values computed alone.
    B = p.shape[0]
    singles = [fn([x[b:b + 1] for x in s], [x[b:b + 1] for x in t], p[b:b + 1], tau=tau)
               for b in range(B)]
    assert close(val, sum(singles) / B, 1e-5)


# ================================================================== 5. batch / size invariance
def test_batch_of_one_equals_the_same_sample_repeated():
    g = gen(11)
    p1 = present_mask([[True, False, True]])
    s, t = feats(1, 3, g), feats(1, 3, g)
    logits, labels = logits_and_labels(1, g)
    t_logits = torch.randn(logits.shape, generator=g)
    fs, ft = fused(1, g), fused(1, g)

    def rep(x):
        return x.repeat(3, *([1] * (x.dim() - 1)))

    pairs = [
        (supervised_loss(logits, labels), supervised_loss(rep(logits), rep(labels))),
        (supervised_loss(logits, labels, ohem_thresh=0.7),
         supervised_loss(rep(logits), rep(labels), ohem_thresh=0.7)),
        (prediction_distillation(logits, t_logits, labels),
         prediction_distillation(rep(logits), rep(t_logits), rep(labels))),
        (unimodal_distillation(s, t, p1), unimodal_distillation([rep(x) for x in s],
                                                                [rep(x) for x in t], rep(p1))),
        (crossmodal_distillation(s, t, p1), crossmodal_distillation([rep(x) for x in s],
                                                                    [rep(x) for x in t], rep(p1))),
        (fused_feature_distillation(fs, ft),
         fused_feature_distillation([rep(x) for x in fs], [rep(x) for x in ft])),
    ]
    for i, (one, three) in enumerate(pairs):
        assert close(one, three), i


def test_batch_is_the_mean_of_its_samples_even_with_different_valid_counts():
    """Per-sample averaging: [A, B] == ([A] + [B]) / 2 holds for every term, also when A and
    B have different numbers of valid pixels / present modalities (more than the weaker
    'same number of valid pixels' condition a pooled pixel mean would need)."""
    g = gen(12)
    logits, labels = logits_and_labels(2, g, ignore_frac=0.0)
    labels[0, :4] = IGNORE_INDEX  # A has fewer valid pixels than B
    t_logits = torch.randn(logits.shape, generator=g)
    p = present_mask([[True, False, False], [True, True, True]])
    s, t = feats(2, 3, g), feats(2, 3, g)
    fs, ft = fused(2, g), fused(2, g)
    fns = {
        "sup": lambda i: supervised_loss(logits[i], labels[i]),
        "ohem": lambda i: supervised_loss(logits[i], labels[i], ohem_thresh=0.7),
        "mad": lambda i: prediction_distillation(logits[i], t_logits[i], labels[i]),
        "mad_nolabels": lambda i: prediction_distillation(logits[i], t_logits[i]),
        "umd": lambda i: unimodal_distillation([x[i] for x in s], [x[i] for x in t], p[i]),
        "cmd": lambda i: crossmodal_distillation([x[i] for x in s], [x[i] for x in t], p[i]),
        "fkd": lambda i: fused_feature_distillation([x[i] for x in fs], [x[i] for x in ft]),
    }
    both, a, b = slice(0, 2), slice(0, 1), slice(1, 2)
    for name, fn in fns.items():
        assert close(fn(both), (fn(a) + fn(b)) / 2), name
    # Sample A has a single modality: its L_cmd is 0 and it still counts as a sample.
    assert float(fns["cmd"](a)) == 0.0
    assert close(fns["cmd"](both), fns["cmd"](b) / 2)


def test_sample_without_valid_pixels_is_left_out():
    g = gen(13)
    logits, labels = logits_and_labels(2, g)
    labels[1] = IGNORE_INDEX
    t_logits = torch.randn(logits.shape, generator=g)
    assert close(supervised_loss(logits, labels), supervised_loss(logits[:1], labels[:1]))
    assert close(supervised_loss(logits, labels, ohem_thresh=0.7),
                 supervised_loss(logits[:1], labels[:1], ohem_thresh=0.7))
    assert close(prediction_distillation(logits, t_logits, labels),
                 prediction_distillation(logits[:1], t_logits[:1], labels[:1]))
    # No valid pixel at all: 0, still differentiable.
    x = logits.clone().requires_grad_(True)
    none = torch.full_like(labels, IGNORE_INDEX)
    for val in (supervised_loss(x, none), supervised_loss(x, none, ohem_thresh=0.7),
                prediction_distillation(x, t_logits, none)):
        assert float(val.detach()) == 0.0 and val.requires_grad
        val.backward()
        assert torch.isfinite(x.grad).all()


def test_scale_does_not_grow_with_image_size_or_modality_count():
    g = gen(14)
    logits, labels = logits_and_labels(2, g)
    t_logits = torch.randn(logits.shape, generator=g)
    s, t = feats(2, 2, g), feats(2, 2, g)
    fs, ft = fused(2, g), fused(2, g)
    p = torch.ones(2, 2, dtype=torch.bool)

    def tile(x):  # the same image, twice as high and three times as wide
        return x.repeat(*([1] * (x.dim() - 2)), 2, 3)

    assert close(supervised_loss(tile(logits), tile(labels)), supervised_loss(logits, labels))
    assert close(prediction_distillation(tile(logits), tile(t_logits), tile(labels)),
                 prediction_distillation(logits, t_logits, labels))
    for fn in (unimodal_distillation, crossmodal_distillation):
        assert close(fn([tile(x) for x in s], [tile(x) for x in t], p), fn(s, t, p))
    assert close(fused_feature_distillation([tile(x) for x in fs], [tile(x) for x in ft]),
                 fused_feature_distillation(fs, ft))
    # The same modality twice: L_umd (a mean over modalities) does not double.
    s1, t1 = [x[:, :1] for x in s], [x[:, :1] for x in t]
    s11, t11 = [x.repeat(1, 2, 1, 1, 1) for x in s1], [x.repeat(1, 2, 1, 1, 1) for x in t1]
    assert close(unimodal_distillation(s11, t11, p), unimodal_distillation(s1, t1, p[:, :1]))


# ================================================================== 6. ignored pixels
@pytest.mark.parametrize("ohem", [None, 0.7])
def test_ignored_pixels_contribute_nothing(ohem):
    g = gen(15)
    logits, labels = logits_and_labels(2, g, ignore_frac=0.4)
    t_logits = torch.randn(logits.shape, generator=g)
    ign = (labels == IGNORE_INDEX).unsqueeze(1).expand_as(logits)
    l2, t2 = logits.clone(), t_logits.clone()
    l2[ign] = 30 * torch.randn(int(ign.sum()), generator=g)
    t2[ign] = 30 * torch.randn(int(ign.sum()), generator=g)
    assert close(supervised_loss(l2, labels, ohem_thresh=ohem),
                 supervised_loss(logits, labels, ohem_thresh=ohem), 1e-6)
    assert close(prediction_distillation(l2, t2, labels),
                 prediction_distillation(logits, t_logits, labels), 1e-6)
    x = l2.clone().requires_grad_(True)
    total = supervised_loss(x, labels, ohem_thresh=ohem) + prediction_distillation(x, t2, labels)
    total.backward()
    assert (x.grad[ign] == 0).all() and x.grad[~ign].abs().sum() > 0


# ================================================================== 7. AnySegLoss
def outputs(B=2, M=3, seed=16, dtype=torch.float32):
    g = gen(seed)
    logits, labels = logits_and_labels(B, g)
    student = SimpleNamespace(logits=logits.to(dtype),
                              features=[x.to(dtype) for x in feats(B, M, g)],
                              fused=[x.to(dtype) for x in fused(B, g)])
    teacher = SimpleNamespace(logits=torch.randn(logits.shape, generator=g).to(dtype),
                              features=[x.to(dtype) for x in feats(B, M, g)],
                              fused=[x.to(dtype) for x in fused(B, g)])
    p = present_mask([[True, True, False], [False, True, True]][:B])
    return student, teacher, labels, p


def test_anysegloss_total_and_components():
    student, teacher, labels, p = outputs()
    out = AnySegLoss()(student, teacher, labels, p)
    assert set(out) == {"loss", "sup", "mad", "umd", "cmd", "fkd"}
    assert all(v.dim() == 0 and v.dtype == torch.float32 for v in out.values())
    assert close(out["sup"], supervised_loss(student.logits, labels))
    assert close(out["mad"], prediction_distillation(student.logits, teacher.logits, labels))
    assert close(out["umd"], unimodal_distillation(student.features, teacher.features, p))
    assert close(out["cmd"], crossmodal_distillation(student.features, teacher.features, p))
    assert float(out["fkd"]) == 0.0
    assert min(float(out[k]) for k in ("sup", "mad", "umd", "cmd")) > 0
    assert close(out["loss"], out["sup"] + 50 * out["mad"] + 5 * out["umd"] + 10 * out["cmd"])

    with_fkd = AnySegLoss(gamma_fkd=2.0, tau=2.0, tau_cmd=0.5)(student, teacher, labels, p)
    assert close(with_fkd["fkd"], fused_feature_distillation(student.fused, teacher.fused, tau=2.0))
    assert close(with_fkd["cmd"], crossmodal_distillation(student.features, teacher.features, p,
                                                          tau=0.5))
    assert close(with_fkd["loss"], with_fkd["sup"] + 50 * with_fkd["mad"] + 5 * with_fkd["umd"]
                 + 10 * with_fkd["cmd"] + 2 * with_fkd["fkd"])


def test_anysegloss_without_teacher_is_supervised_only():
    student, _, labels, p = outputs()
    out = AnySegLoss(ohem_thresh=0.7)(student, None, labels, p)
    assert close(out["loss"], supervised_loss(student.logits, labels, ohem_thresh=0.7))
    assert close(out["sup"], out["loss"])
    assert all(float(out[k]) == 0.0 for k in ("mad", "umd", "cmd", "fkd"))


def test_anysegloss_zero_weight_skips_the_work():
    student, teacher, labels, p = outputs()
    logits_only = SimpleNamespace(logits=teacher.logits)  # no features / fused to read
    assert AnySegLoss().needs_teacher and AnySegLoss(beta_cmd=0, gamma_fkd=1).needs_teacher
    assert not AnySegLoss(lambda_mad=0, alpha_umd=0, beta_cmd=0).needs_teacher
    out = AnySegLoss(alpha_umd=0, beta_cmd=0)(student, logits_only, labels, p)
    assert float(out["umd"]) == 0.0 and float(out["cmd"]) == 0.0
    assert close(out["loss"], out["sup"] + 50 * out["mad"])
    out = AnySegLoss(lambda_mad=0)(student, SimpleNamespace(features=teacher.features), labels, p)
    assert float(out["mad"]) == 0.0
    assert close(out["loss"], out["sup"] + 5 * out["umd"] + 10 * out["cmd"])


def test_anysegloss_from_config():
    loss = AnySegLoss.from_config({"lambda_mad": 10, "tau": 2.0, "ohem_thresh": 0.7})
    assert (loss.lambda_mad, loss.alpha_umd, loss.tau, loss.ohem_thresh) == (10.0, 5.0, 2.0, 0.7)
    assert AnySegLoss.from_config({}).beta_cmd == 10.0
    assert AnySegLoss.from_config({}).kl_reduction == "mean"
    assert AnySegLoss.from_config({"kl_reduction": "sum"}).kl_reduction == "sum"
    with pytest.raises(ValueError, match="mad_pixels"):
        AnySegLoss(mad_pixels="confident")
    with pytest.raises(ValueError, match="kl_reduction"):
        AnySegLoss(kl_reduction="batchmean")
    with pytest.raises(ValueError, match=r"lamda_mad.*tua|tua.*lamda_mad"):
        AnySegLoss.from_config({"lamda_mad": 1.0, "tua": 2.0, "alpha_umd": 1.0})
    with pytest.raises(ValueError, match="beta_cmd"):
        AnySegLoss(beta_cmd=-1.0)
    with pytest.raises(ValueError, match="tau"):
        AnySegLoss(tau=0.0)


def test_anysegloss_under_bf16_autocast():
    student, teacher, labels, p = outputs(dtype=torch.bfloat16)
    student.logits.requires_grad_(True)
    for x in student.features:
        x.requires_grad_(True)
    loss = AnySegLoss(gamma_fkd=1.0, ohem_thresh=0.7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss(student, teacher, labels, p)
    for k, v in out.items():
        assert v.dtype == torch.float32 and torch.isfinite(v), k
    # Same value as float32 on the same (bf16-rounded) inputs: the math is done in float32.
    f32 = lambda o: SimpleNamespace(logits=o.logits.detach().float(),  # noqa: E731
                                    features=[x.detach().float() for x in o.features],
                                    fused=[x.float() for x in o.fused])
    ref = loss(f32(student), f32(teacher), labels, p)
    for k in out:
        assert close(out[k], ref[k], 1e-4), k
    out["loss"].backward()
    assert student.logits.grad.dtype == torch.bfloat16
    assert torch.isfinite(student.logits.grad.float()).all()
    assert all(torch.isfinite(x.grad.float()).all() for x in student.features)


# ================================================================== 8. special cases
def test_cmd_single_modality_sample_is_zero():
    g = gen(17)
    s, t = feats(3, 4, g), feats(3, 4, g)
    p = present_mask([[False, True, False, False], [True, False, False, False],
                      [False, False, False, True]])
    assert float(crossmodal_distillation(s, t, p)) == 0.0
    assert float(unimodal_distillation(s, t, p)) > 0  # the unimodal term still works
    one = crossmodal_distillation([x[:, :1] for x in s], [x[:, :1] for x in t],
                                  torch.ones(3, 1, dtype=torch.bool))
    assert float(one) == 0.0


def ohem_case(easy_logit_values, hard_logit_values=(), n_ignored=0):
    """One sample, K = 2, true class 0, logits (l, 0): p_true = sigmoid(l), CE = softplus(-l)."""
    ls = list(hard_logit_values) + list(easy_logit_values) + [-5.0] * n_ignored
    n = len(ls)
    logits = torch.zeros(1, 2, 1, n)
    logits[0, 0, 0] = torch.tensor(ls)
    labels = torch.zeros(1, 1, n, dtype=torch.long)
    if n_ignored:
        labels[0, 0, -n_ignored:] = IGNORE_INDEX  # very hard, but ignored
    return logits, labels


def ce(l):
    return math.log1p(math.exp(-l))


def test_ohem_hand_computed():
    easy = [3.0 + 0.1 * i for i in range(13)]  # p_true >= sigmoid(3) = 0.95 > 0.7
    hard = [-1.0, 0.0, 0.5]  # p_true = 0.27, 0.5, 0.62 < 0.7
    logits, labels = ohem_case(easy, hard, n_ignored=4)  # 16 valid pixels
    # Three hard pixels, more than ceil(16 / 16) = 1: only they count.
    expected = sum(ce(v) for v in hard) / 3
    x = logits.clone().requires_grad_(True)
    val = supervised_loss(x, labels, ohem_thresh=0.7)
    assert close(val, expected)
    val.backward()
    kept = x.grad[0].abs().sum(0)[0] > 0
    assert kept.tolist() == [True] * 3 + [False] * 17  # easy and ignored pixels get no gradient
    # Minimum fraction 1/4 -> 4 pixels: the 3 hard ones plus the hardest easy one (l = 3.0).
    assert close(supervised_loss(logits, labels, ohem_thresh=0.7, ohem_min_frac=0.25),
                 (sum(ce(v) for v in hard) + ce(3.0)) / 4)
    # No hard pixel: the hardest ceil(frac * n_valid) pixels are kept.
    logits2, labels2 = ohem_case([1.0 + 0.25 * i for i in range(16)])  # p_true >= 0.731
    assert close(supervised_loss(logits2, labels2, ohem_thresh=0.7, ohem_min_frac=1 / 8),
                 (ce(1.0) + ce(1.25)) / 2)
    # 15 valid pixels, all easy: ceil(15 / 16) = 1 pixel (a floor would keep none -> NaN).
    logits3, labels3 = ohem_case([1.0 + 0.25 * i for i in range(15)])
    assert close(supervised_loss(logits3, labels3, ohem_thresh=0.7), ce(1.0))
    # A threshold of 1 makes every pixel hard: plain cross-entropy.
    assert close(supervised_loss(logits, labels, ohem_thresh=1.0), supervised_loss(logits, labels))
    # Selection and minimum are per sample: a batch is the mean of its samples.
    pad = torch.zeros(1, 2, 1, 4)
    pad_labels = torch.full((1, 1, 4), IGNORE_INDEX)
    batch = torch.cat([logits, torch.cat([logits2, pad], 3)])
    batch_labels = torch.cat([labels, torch.cat([labels2, pad_labels], 2)])
    assert close(supervised_loss(batch, batch_labels, ohem_thresh=0.7, ohem_min_frac=1 / 8),
                 (expected + (ce(1.0) + ce(1.25)) / 2) / 2)
