"""OpenVINO bf16 against fp32: the per-subset agreement a Runtime measures once per export.

Where OpenVINO runs bf16 (a CPU with native bf16), ``Runtime.bf16_agreement`` holds, per
modality subset, the share of pixels whose bf16 labels equal fp32's on fixed synthetic
frames; it is measured once, kept as JSON in the export directory (or in the cache root when
the export cannot take it) and read back by later starts while it is valid for the same
checkpoint, size, OpenVINO and CPU. The model is a small random-weight checkpoint.
"""
from __future__ import annotations

import json
import warnings

import pytest

from anyseg_core import deploy
from helpers import export_cache, random_checkpoint

NET_HW = (64, 96)


def test_the_summary_names_every_subset_and_says_whether_bf16_meets_the_minimum(tmp_path):
    low = deploy.Bf16Agreement({"camera": 0.9995, "lidar": 0.9953}, (64, 96), 4,
                               tmp_path / "a.json", cached=True)
    assert low.worst == ("lidar", 0.9953) and not low.meets_minimum
    text = low.summary()
    assert "camera 99.95 %" in text and "lidar 99.53 %" in text
    assert "1 of 2 subsets below 99.9 %" in text and "cached in" in text
    high = deploy.Bf16Agreement({"camera": 1.0, "lidar": 0.9990}, (64, 96), 4, None,
                                cached=False)
    assert high.meets_minimum and "every subset at >= 99.9 %" in high.summary()


# ------------------------------------------------------------------------ with OpenVINO

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    pytest.importorskip("onnx", reason="the deploy extra is not installed")
    pytest.importorskip("openvino", reason="openvino is not installed (the deploy extra)")
    return random_checkpoint(tmp_path_factory.mktemp("bf16_ckpt") / "random.safetensors",
                             NET_HW)


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    """One export cache for the module (the checkpoint is exported once)."""
    yield from export_cache(tmp_path_factory.mktemp("bf16_cache"))


@pytest.fixture()
def cache(module_cache):
    """The module's cache with no agreement kept anywhere yet."""
    import shutil

    for kept in module_cache.glob(f"exports/*/{deploy.BF16_AGREEMENT_FILE}"):
        shutil.rmtree(kept) if kept.is_dir() else kept.unlink()
    shutil.rmtree(module_cache / "bf16_agreement", ignore_errors=True)
    return module_cache


def _bf16_runtime(checkpoint):
    from anyseg_core.runtime import Runtime

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a CPU without bf16 runs fp32
        runtime = Runtime(checkpoint, device="cpu", backend="openvino", precision="bf16",
                          warmup=False)
    if runtime.precision != "bf16":
        pytest.skip("this CPU has no native bf16 (avx512_bf16 / amx_bf16): OpenVINO runs "
                    "fp32 and there is no bf16 agreement to measure")
    return runtime


@pytest.mark.slow
def test_the_agreement_is_measured_once_kept_beside_the_export_and_read_back(checkpoint,
                                                                            cache):
    first = _bf16_runtime(checkpoint)
    agreement = first.bf16_agreement
    assert agreement is not None and not agreement.cached
    assert set(agreement.subsets) == set(first.engine.subsets)  # every subset: 7
    assert len(agreement.subsets) == 7
    assert all(0.5 < v <= 1.0 for v in agreement.subsets.values())
    assert agreement.path == first.export_path / deploy.BF16_AGREEMENT_FILE
    kept = json.loads(agreement.path.read_text())
    assert kept["subsets"] == agreement.subsets
    assert kept["key"]["checkpoint_sha256"] == deploy.file_sha256(checkpoint)
    assert kept["key"]["input_size"] == list(NET_HW)

    # A later start reads it back, not measuring: what the file says is what it gets.
    kept["subsets"] = {k: 0.25 for k in kept["subsets"]}
    agreement.path.write_text(json.dumps(kept))
    again = _bf16_runtime(checkpoint).bf16_agreement
    assert again.cached and set(again.subsets.values()) == {0.25}

    # Kept for another OpenVINO (or CPU, checkpoint, check): measured again and replaced.
    kept["key"]["openvino"] = "0.0.0"
    agreement.path.write_text(json.dumps(kept))
    fresh = _bf16_runtime(checkpoint).bf16_agreement
    assert not fresh.cached and fresh.subsets == agreement.subsets
    assert json.loads(agreement.path.read_text())["key"]["openvino"] != "0.0.0"


@pytest.mark.slow
def test_an_export_that_cannot_take_the_file_keeps_it_in_the_cache_root(checkpoint, cache):
    export = deploy.cached_export(checkpoint, NET_HW)
    (export / deploy.BF16_AGREEMENT_FILE).mkdir()  # unwritable as a file, even for root
    runtime = _bf16_runtime(checkpoint)
    path = runtime.bf16_agreement.path
    assert path.parent == cache / "bf16_agreement" and path.is_file()
    assert _bf16_runtime(checkpoint).bf16_agreement.cached


@pytest.mark.slow
def test_the_comparison_counts_equal_labels(checkpoint, cache):
    """An engine against itself agrees everywhere; the frames cover every modality."""
    export = deploy.cached_export(checkpoint, NET_HW)
    metadata = deploy.read_export(export)
    frames = deploy.bf16_check_inputs(metadata)
    assert len(frames) == deploy.BF16_CHECK["frames"]
    assert all(set(f) == {"camera", "events", "lidar"} for f in frames)
    assert all(x.shape == (1, 3, *NET_HW) for f in frames for x in f.values())
    fp32 = deploy.OpenVinoEngine(export, metadata, "fp32")
    same = deploy.measure_bf16_agreement(export, metadata, fp32)
    assert same == {k: 1.0 for k in metadata["subsets"]}


@pytest.mark.slow
def test_no_agreement_where_bf16_does_not_run(checkpoint, cache):
    from anyseg_core.runtime import Runtime

    for kwargs in ({"backend": "openvino"}, {"backend": "torch"},
                   {"backend": "torch", "precision": "bf16"}):
        assert Runtime(checkpoint, device="cpu", warmup=False, **kwargs).bf16_agreement is None
