"""Exported inference: one static ONNX graph per modality subset, run by ONNX Runtime or
OpenVINO behind :class:`anyseg_core.runtime.Runtime` (``backend=``).

Why one graph per subset. The segmentor's forward pass branches in Python on which
modalities are present (which inputs are gathered into the encoder's batch, how many are
averaged). A traced export bakes the branch taken for the example into the graph, and that
graph then gives wrong labels for other subsets while looking right on the example's. Here
each subset gets its own :class:`SubsetGraph`: its inputs are exactly the subset's
modalities, so an absent modality never reaches the encoder (camera only costs one encoder
pass), every shape is static (what TensorRT wants), and there is no branch left to bake.

An export is a directory::

    model.onnx/                 (any name; ``python -m anyseg_core.export ... --format onnx``)
      metadata.json             format, the checkpoint's metadata and sha256, size, subsets
      weights.bin               every distinct weight once (ONNX external data)
      camera.onnx               inputs: camera [1, 3, H, W] float32 (normalised)
      camera+lidar.onnx         inputs: camera, lidar (the checkpoint's modality order)
      ...                       outputs: labels [1, H, W] uint8, confidence [1, H, W] float32

Each .onnx also carries metadata.json in its ``metadata_props`` (key ``anyseg``). The graphs
take what :meth:`Runtime.prepare` gives (sensor processing stays in anyseg_core.sensors) and
give class ids and the softmax probability of each pixel's class, as Runtime.predict does.

ONNX Runtime, OpenVINO and onnx are optional (``pip install anyseg_ros[deploy]``); nothing
here imports them before it is asked to export or run.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import torch
from torch import nn

from .checkpoint import CheckpointError, build_model, read_metadata
from .modalities import all_subsets

FORMAT = "anyseg-onnx"
FORMAT_VERSION = 1
METADATA = "metadata.json"
WEIGHTS = "weights.bin"
BACKENDS = ("torch", "onnxruntime", "openvino")
EXPORT_PRECISIONS = ("fp32", "fp16")
OPSET = 18
#: torch.onnx's two exporters: the TorchScript tracer (about 6x faster to export here; the
#: graphs have no branch for it to bake in) and torch.export ("dynamo").
EXPORTERS = ("torchscript", "dynamo")
OUTPUTS = ("labels", "confidence")
_CHUNK = 1 << 20


def subset_key(subset: Sequence[str]) -> str:
    """``camera+lidar``: a subset's name in file names and metadata."""
    return "+".join(subset)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def is_export(path: str | Path) -> bool:
    """Whether ``path`` is an export directory (it holds metadata.json)."""
    return Path(path).is_dir() and (Path(path) / METADATA).is_file()


class SubsetGraph(nn.Module):
    """The segmentor for one modality subset, with no data-dependent branch.

    ``forward(*inputs)``: the subset's modalities, each [1, 3, H, W], in the model's modality
    order; returns (labels uint8 [1, H, W], confidence float32 [1, H, W]). The same encoder,
    fusion and head as :class:`~anyseg_core.model.AnymodalSegmentor` (``fuse``, ``decode``),
    the absent modalities entering the fusion as zeros with weight 0, as in its forward."""

    def __init__(self, model: nn.Module, subset: Sequence[str], size_hw: Sequence[int]):
        super().__init__()
        unknown = [m for m in subset if m not in model.modalities]
        if not subset or unknown:
            raise ValueError(f"subset {list(subset)} is not a non-empty subset of "
                             f"{list(model.modalities)}")
        self.model = model
        self.subset = tuple(m for m in model.modalities if m in subset)
        self.size_hw = (int(size_hw[0]), int(size_hw[1]))
        self.register_buffer("weight", torch.tensor(
            [[float(m in subset) for m in model.modalities]]), persistent=False)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat(inputs, 0) if len(inputs) > 1 else inputs[0]
        feats = self.model.encoder(x)
        fused = []
        for stage, f in enumerate(feats):
            rows, k = [], 0
            for m in self.model.modalities:
                if m in self.subset:
                    rows.append(f[k:k + 1])
                    k += 1
                else:
                    rows.append(torch.zeros_like(f[:1]))
            fused.append(self.model.fuse(stage, torch.stack(rows, 1), self.weight))
        logits = self.model.decode(fused, self.size_hw)
        confidence, labels = torch.softmax(logits.float(), dim=1).max(1)
        return labels.to(torch.uint8), confidence


# ------------------------------------------------------------------------------- export

def export_onnx(checkpoint: str | Path, out: str | Path,
                size_hw: Optional[Sequence[int]] = None, precision: str = "fp32",
                subsets: Optional[Sequence[Sequence[str]]] = None, opset: int = OPSET,
                exporter: str = "torchscript", log=None) -> Path:
    """Export ``checkpoint`` (.safetensors) as a directory ``out`` (must not exist) of one
    ONNX graph per modality subset (default: every non-empty subset) at ``size_hw`` (default:
    the checkpoint's training size). ``precision`` fp16 stores weights and computes in
    float16 with float32 inputs and outputs (for GPUs; a CPU runs fp32 best).
    ``exporter``: one of :data:`EXPORTERS`.
    Written into a temporary directory beside ``out`` (``.<name>.<random>.partial``) and
    renamed at the end: an interrupted export leaves nothing that looks complete. A
    FileExistsError when ``out`` exists, or was made by someone else during the export (the
    partial directory is then removed)."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if precision not in EXPORT_PRECISIONS:
        raise ValueError(f"precision must be one of {EXPORT_PRECISIONS}, got {precision!r}")
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose another path or remove it")
    model, meta = build_model(checkpoint, device="cpu")
    size = _check_size(size_hw or meta["input_size"])
    chosen = [tuple(m for m in meta["modalities"] if m in s)
              for s in (subsets or all_subsets(meta["modalities"]))]
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "checkpoint_sha256": file_sha256(checkpoint),
                "checkpoint_name": Path(checkpoint).name, "input_size": list(size),
                "precision": precision, "opset": opset, "torch": torch.__version__,
                "exporter": exporter,
                "inputs": "each modality float32 [1, 3, H, W], normalised as the checkpoint's "
                          "'normalization' says (anyseg_core.sensors.prepare_inputs)",
                "outputs": {"labels": "uint8 [1, H, W] class ids",
                            "confidence": "float32 [1, H, W] softmax probability of the class"},
                "subsets": {subset_key(s): f"{subset_key(s)}.onnx" for s in chosen},
                "meta": meta}
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        for subset in chosen:
            path = work / metadata["subsets"][subset_key(subset)]
            if log:
                log(f"exporting {subset_key(subset)} at {size[0]}x{size[1]} ({precision})")
            _export_subset(model, subset, size, path, opset, exporter)
            _finish_graph(path, metadata, precision)
        _share_weights(work, list(metadata["subsets"].values()))
        (work / METADATA).write_text(json.dumps(metadata, indent=1))
        try:
            work.rename(out)
        except OSError as err:
            # A directory made at ``out`` meanwhile (another process's finished export):
            # rename(2) replaces only an empty one and says ENOTEMPTY or EEXIST otherwise.
            if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise FileExistsError(f"{out} was made by someone else during the export"
                                      ) from None
            raise
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out


def _check_size(size_hw: Sequence[int]) -> tuple[int, int]:
    if len(size_hw) != 2 or any(int(v) <= 0 or int(v) % 32 for v in size_hw):
        raise ValueError(f"size must be [H, W], positive and divisible by 32, got "
                         f"{list(size_hw)}")
    return int(size_hw[0]), int(size_hw[1])


def _export_subset(model: nn.Module, subset: tuple[str, ...], size: tuple[int, int],
                   path: Path, opset: int, exporter: str) -> None:
    import contextlib
    import io
    import warnings

    graph = SubsetGraph(model, subset, size).eval()
    example = tuple(torch.zeros(1, 3, *size) for _ in subset)
    with warnings.catch_warnings(), torch.no_grad(), \
            contextlib.redirect_stdout(io.StringIO()):  # the dynamo exporter's progress
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(graph, example, str(path), dynamo=exporter == "dynamo",
                          opset_version=opset, input_names=list(subset),
                          output_names=list(OUTPUTS))


def _finish_graph(path: Path, metadata: dict, precision: str) -> None:
    """fp16 conversion (inputs and outputs stay float32) and the metadata in the file."""
    import onnx

    graph = onnx.load(str(path))
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        graph = convert_float_to_float16(graph, keep_io_types=True)
    del graph.metadata_props[:]
    entry = graph.metadata_props.add()
    entry.key, entry.value = "anyseg", json.dumps(metadata)
    onnx.save(graph, str(path))


def _share_weights(folder: Path, files: Sequence[str], min_bytes: int = 1024,
                   align: int = 4096) -> None:
    """Store each distinct weight tensor of the graphs once, in ``folder/WEIGHTS`` (ONNX
    external data, offsets aligned to ``align`` bytes), and point every graph at it: the
    subsets' graphs share the encoder and head, which a graph per subset would otherwise
    repeat 2^M - 1 times. Tensors under ``min_bytes`` stay inside their graph."""
    import onnx

    where: dict[bytes, tuple[int, int]] = {}
    with open(folder / WEIGHTS, "wb") as store:
        for file in files:
            graph = onnx.load(str(folder / file))
            for tensor in graph.graph.initializer:
                raw = tensor.raw_data
                if tensor.data_location == onnx.TensorProto.EXTERNAL or len(raw) < min_bytes:
                    continue
                key = hashlib.sha256(raw).digest() + str(tensor.data_type).encode()
                if key not in where:
                    store.write(b"\0" * (-store.tell() % align))
                    where[key] = (store.tell(), len(raw))
                    store.write(raw)
                offset, length = where[key]
                tensor.ClearField("raw_data")
                tensor.data_location = onnx.TensorProto.EXTERNAL
                del tensor.external_data[:]
                for k, v in (("location", WEIGHTS), ("offset", str(offset)),
                             ("length", str(length))):
                    entry = tensor.external_data.add()
                    entry.key, entry.value = k, v
            onnx.save(graph, str(folder / file))


def read_export(path: str | Path) -> dict:
    """The metadata of an export directory, checked (format, version, every graph there);
    a CheckpointError names what is wrong."""
    path = Path(path)
    try:
        metadata = json.loads((path / METADATA).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"export {path}: cannot read {METADATA}: {err}") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"export {path}: format is {metadata.get('format')!r}, not "
                              f"{FORMAT!r}")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"export {path}: format version {metadata.get('format_version')}"
                              f", this code reads {FORMAT_VERSION}: export the checkpoint again")
    missing = [f for f in [*metadata.get("subsets", {}).values(), WEIGHTS]
               if not (path / f).is_file()]
    if missing or not metadata.get("subsets"):
        raise CheckpointError(f"export {path}: graph file(s) missing: {missing or 'all'}")
    return metadata


def cache_root() -> Path:
    """Where exports made on demand are kept: $ANYSEG_CACHE, else $XDG_CACHE_HOME/anyseg,
    else ~/.cache/anyseg."""
    if os.environ.get("ANYSEG_CACHE"):
        return Path(os.environ["ANYSEG_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "anyseg"


#: How long :func:`cached_export` waits for another process exporting the same entry.
EXPORT_WAIT_S = 900.0
LOCK_SUFFIX = ".lock"
PARTIAL_SUFFIX = ".partial"


class ExportBusy(TimeoutError):
    """Another process held a cache entry's lock (it was exporting) for longer than we
    waited."""


def cached_export(checkpoint: str | Path, size_hw: Sequence[int], precision: str = "fp32",
                  log=None, wait_s: float = EXPORT_WAIT_S) -> Path:
    """The export of ``checkpoint`` at ``size_hw`` and ``precision``, made once and then
    reused: keyed by the checkpoint file's sha256 (a retrained file gets a new export), the
    size, the precision and the export format version.

    Safe under any number of processes at once (nodes launched together, a node and
    ``evaluate``): a finished export is taken without locking (it appears by one atomic
    rename, complete or not at all); otherwise one process exports while holding an
    exclusive lock on ``<entry>.lock`` beside the entry (``fcntl.flock``, released by the
    kernel when its holder exits, crashed or not) and the others wait for the lock (saying so
    once, through ``log`` or else on stderr), then take its export. Whoever holds the lock first removes what a crashed exporter left of this
    entry (``.<entry>.*.partial``) and a damaged entry. Waiting longer than ``wait_s``
    seconds raises :class:`ExportBusy` naming the lock and its holder's pid."""
    read_metadata(checkpoint)  # a CheckpointError before any work
    size = _check_size(size_hw)
    sha = file_sha256(checkpoint)
    path = (cache_root() / "exports"
            / f"{sha[:16]}-{size[0]}x{size[1]}-{precision}-v{FORMAT_VERSION}")
    if _finished(path, sha):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with _entry_lock(path.with_name(path.name + LOCK_SUFFIX), wait_s, checkpoint, log):
        if _finished(path, sha):  # made by the process we waited for
            return path
        for partial in path.parent.glob(f".{path.name}.*{PARTIAL_SUFFIX}"):
            shutil.rmtree(partial, ignore_errors=True)  # a crashed exporter's: we hold the lock
        if path.is_symlink() or path.is_file():  # damaged or foreign: made again
            path.unlink()
        elif path.exists():
            shutil.rmtree(path, ignore_errors=True)
        try:
            return export_onnx(checkpoint, path, size, precision, log=log)
        except FileExistsError:
            # Made meanwhile by a process that did not take the lock (a file system
            # without flock): take it if it is the same export.
            if _finished(path, sha):
                return path
            raise


def _finished(path: Path, sha: str) -> bool:
    """Whether ``path`` is a complete export of the checkpoint with sha256 ``sha``."""
    if not is_export(path):
        return False
    try:
        return read_export(path)["checkpoint_sha256"] == sha
    except CheckpointError:
        return False


def _stderr(text: str) -> None:
    print(f"anyseg_core.deploy: {text}", file=sys.stderr, flush=True)


class _entry_lock:
    """An exclusive ``flock`` on ``lock`` for the ``with`` block, waited for at most
    ``wait_s`` seconds. The file stays (removing a lock file others may have open would let
    two processes hold "the" lock at once); it holds the holder's pid, for messages. Where
    ``fcntl`` is missing (Windows) nothing is locked: the exporters then race, and all but
    the rename's winner take the winner's export (:func:`cached_export`)."""

    POLL_S = 0.2

    def __init__(self, lock: Path, wait_s: float, checkpoint, log) -> None:
        self.lock, self.wait_s, self.checkpoint, self.log = lock, float(wait_s), checkpoint, log
        self.fd: Optional[int] = None

    def __enter__(self) -> "_entry_lock":
        try:
            import fcntl
        except ImportError:
            return self
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o666)
        deadline = time.monotonic() + self.wait_s
        told = False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    pass
                if not told:  # a node may wait minutes: say why, once
                    (self.log or _stderr)(f"waiting for {self._holder(fd)} exporting the "
                                          f"same model into {self.lock.with_suffix('')}")
                    told = True
                if time.monotonic() >= deadline:
                    raise ExportBusy(
                        f"waited {self.wait_s:.0f} s for {self._holder(fd)}, which holds "
                        f"{self.lock} while exporting {self.checkpoint}; it may still be "
                        f"working: try again later, or stop it (a killed exporter leaves "
                        f"nothing that blocks the next run)")
                time.sleep(self.POLL_S)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            pid = os.pread(fd, 32, 0).decode().strip()
        except OSError:
            pid = ""
        return f"process {pid}" if pid.isdigit() else "another process"

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None


# ------------------------------------------------------------------------------ engines

#: ONNX Runtime's session option for its intra-op threads' busy-waiting ("1" spins, ONNX
#: Runtime's own default; "0" sleeps when idle): :class:`OnnxRuntimeEngine`'s ``spinning``.
ORT_SPINNING = "session.intra_op.allow_spinning"
#: ``spinning`` of an engine on the CPU when not given: off. Measured each runner in its own
#: process (benchmarks/bench_backends.py, docs/benchmarks.md): with spinning on, the
#: process spent about twice the CPU time per frame of the node's loop, and the sensor
#: processing that follows each run (PyTorch threads) waited for the spinning threads.
ORT_CPU_SPINNING = False


class OnnxRuntimeEngine:
    """The export's graphs in ONNX Runtime sessions: CPU (``device`` cpu), or on a CUDA
    device the TensorRT execution provider where present, then CUDA, with inputs and outputs
    bound to torch tensors on the device (IO binding: no host round trip). ``spinning``:
    whether the intra-op threads busy-wait for work (:data:`ORT_SPINNING`); None = off on
    the CPU (:data:`ORT_CPU_SPINNING`), ONNX Runtime's default (on) on CUDA."""

    name = "onnxruntime"

    def __init__(self, export: Path, metadata: dict, device: torch.device, threads: int = 0,
                 tensorrt: bool = True, spinning: Optional[bool] = None):
        import onnxruntime as ort

        self.device = device
        self.size = tuple(metadata["input_size"])
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        if spinning is None and device.type == "cpu":
            spinning = ORT_CPU_SPINNING
        if spinning is not None:
            # Whether the intra-op worker threads spin (busy-wait) for work between ops and
            # after a run instead of sleeping (ONNX Runtime's default is to spin).
            options.add_session_config_entry(ORT_SPINNING, "1" if spinning else "0")
        #: whether the sessions' intra-op threads spin
        self.spinning = True if spinning is None else bool(spinning)
        available = ort.get_available_providers()
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            if "CUDAExecutionProvider" not in available:
                raise ValueError("backend onnxruntime on a CUDA device needs onnxruntime-gpu "
                                 f"(providers here: {available})")
            stream = str(torch.cuda.current_stream(device).cuda_stream)
            providers = []
            if tensorrt and "TensorrtExecutionProvider" in available:
                engines = cache_root() / "tensorrt"
                engines.mkdir(parents=True, exist_ok=True)
                providers.append(("TensorrtExecutionProvider", {
                    "device_id": index, "trt_fp16_enable": metadata["precision"] == "fp16",
                    "trt_engine_cache_enable": True, "trt_engine_cache_path": str(engines),
                    "user_compute_stream": stream}))
            providers.append(("CUDAExecutionProvider", {"device_id": index,
                                                        "user_compute_stream": stream}))
        else:
            providers = ["CPUExecutionProvider"]
        self.sessions = {key: ort.InferenceSession(str(export / file), options,
                                                   providers=providers)
                         for key, file in metadata["subsets"].items()}
        self.subsets = tuple(self.sessions)
        self.providers = self.sessions[next(iter(self.sessions))].get_providers()

    def run(self, subset: Sequence[str], inputs: Mapping[str, torch.Tensor]
            ) -> tuple[torch.Tensor, torch.Tensor]:
        session = self.sessions[subset_key(subset)]
        if self.device.type != "cuda":
            feeds = {m: inputs[m].detach().contiguous().cpu().numpy() for m in subset}
            labels, confidence = session.run(list(OUTPUTS), feeds)
            return torch.from_numpy(labels[0]), torch.from_numpy(confidence[0])
        import numpy as np

        binding = session.io_binding()
        index = self.device.index or 0
        kept = []
        for m in subset:
            x = inputs[m].detach().to(self.device, torch.float32).contiguous()
            kept.append(x)
            binding.bind_input(m, "cuda", index, np.float32, list(x.shape), x.data_ptr())
        labels = torch.empty((1, *self.size), dtype=torch.uint8, device=self.device)
        confidence = torch.empty((1, *self.size), dtype=torch.float32, device=self.device)
        binding.bind_output("labels", "cuda", index, np.uint8, list(labels.shape),
                            labels.data_ptr())
        binding.bind_output("confidence", "cuda", index, np.float32, list(confidence.shape),
                            confidence.data_ptr())
        session.run_with_iobinding(binding)
        return labels[0], confidence[0]


_OV_CORE = None


def _openvino_core():
    """One ``openvino.Core`` for the process, shared by every engine: a Core per model, and
    the Cores destroyed and made again, end in a segmentation fault after a few dozen loads
    in one process (seen here in a test run; reported by other OpenVINO users too)."""
    global _OV_CORE
    if _OV_CORE is None:
        import openvino as ov

        _OV_CORE = ov.Core()
    return _OV_CORE


class OpenVinoEngine:
    """The export's graphs compiled by OpenVINO for the CPU, in ``precision`` fp32 or bf16
    (OpenVINO's own default on a CPU with AVX-512 BF16 or AMX is bf16: set explicitly)."""

    name = "openvino"

    def __init__(self, export: Path, metadata: dict, precision: str = "fp32",
                 threads: int = 0):
        core = _openvino_core()
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.requests = {}
        for key, file in metadata["subsets"].items():
            compiled = core.compile_model(str(export / file), "CPU", config)
            self.requests[key] = (compiled.create_infer_request(),
                                  compiled.output("labels"), compiled.output("confidence"))
        self.subsets = tuple(self.requests)
        # What OpenVINO runs: a CPU without bf16 instructions runs f32 whatever was asked.
        used = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
        self.precision = "bf16" if "bf" in used else "fp32"

    def run(self, subset: Sequence[str], inputs: Mapping[str, torch.Tensor]
            ) -> tuple[torch.Tensor, torch.Tensor]:
        request, labels, confidence = self.requests[subset_key(subset)]
        result = request.infer({m: inputs[m].detach().contiguous().cpu().numpy()
                                for m in subset})
        return (torch.from_numpy(result[labels][0].copy()),
                torch.from_numpy(result[confidence][0].copy()))


# ---------------------------------------------------------------------------- agreement

def agreement(reference, candidate, frames, subsets=None) -> dict[str, float]:
    """Per modality subset (default: every one), the fraction of pixels where
    ``candidate``'s labels equal ``reference``'s (two :class:`~anyseg_core.runtime.Runtime`
    of one checkpoint, e.g. torch and an exported backend) over ``frames`` (RawFrames, or
    prepared inputs modality -> [1, 3, H, W]); each frame is cut down to each subset."""
    prepared = [reference.prepare(f) if not isinstance(f, Mapping) else f for f in frames]
    return labels_agreement(lambda subset, x: reference.predict(x).labels,
                            lambda subset, x: candidate.predict(x).labels, prepared,
                            subsets or all_subsets(reference.modalities))


def labels_agreement(labels_a, labels_b, frames, subsets) -> dict[str, float]:
    """Per subset, the fraction of pixels where ``labels_a(subset, inputs)`` equals
    ``labels_b(subset, inputs)`` over ``frames`` (modality -> [1, 3, H, W], each cut down to
    the subset)."""
    result = {}
    for subset in subsets:
        equal = total = 0
        for inputs in frames:
            x = {m: inputs[m] for m in subset}
            a, b = labels_a(subset, x).cpu(), labels_b(subset, x).cpu()
            equal += int((a == b).sum())
            total += a.numel()
        result[subset_key(subset)] = equal / total
    return result


# ------------------------------------------------------------------ bf16 against fp32

#: The file, in the export directory, that keeps :func:`bf16_agreement`'s result.
BF16_AGREEMENT_FILE = "bf16_agreement.json"
#: The share of pixels whose bf16 labels must equal fp32's on every subset before bf16 could
#: be a default; below it the start-up log line is a warning. fp32 is the default precision.
BF16_MIN_AGREEMENT = 0.999
#: The inputs of the check: validation frames of the synthetic world at the export's size,
#: prepared as the checkpoint's own inputs are (fixed seed: the same frames every time).
BF16_CHECK = {"version": 1, "dataset": "synthetic", "split": "val", "seed": 11, "frames": 4}


@dataclass
class Bf16Agreement:
    """Per modality subset, the share of pixels where an export's labels in OpenVINO bf16
    equal its labels in OpenVINO fp32, over :data:`BF16_CHECK`'s frames."""

    subsets: dict[str, float]
    size: tuple[int, int]
    frames: int
    path: Optional[Path]  # where it is kept (None: it could not be written)
    cached: bool  # read back from ``path``, not measured by this process

    @property
    def worst(self) -> tuple[str, float]:
        key = min(self.subsets, key=self.subsets.get)
        return key, self.subsets[key]

    @property
    def meets_minimum(self) -> bool:
        """Every subset at :data:`BF16_MIN_AGREEMENT` or above."""
        return self.worst[1] >= BF16_MIN_AGREEMENT

    def summary(self) -> str:
        """One line for a log: the agreement of every subset, and what it means."""
        low = [k for k, v in self.subsets.items() if v < BF16_MIN_AGREEMENT]
        per = ", ".join(f"{k} {100 * v:.2f} %" for k, v in self.subsets.items())
        verdict = (f"every subset at >= {100 * BF16_MIN_AGREEMENT:.1f} %" if not low else
                   f"{len(low)} of {len(self.subsets)} subsets below "
                   f"{100 * BF16_MIN_AGREEMENT:.1f} %: precision fp32 gives the exact labels")
        return (f"bf16 labels equal fp32's on {per} of the pixels ({self.frames} synthetic "
                f"frames at {self.size[0]}x{self.size[1]}, "
                f"{'cached in' if self.cached else 'measured now, kept in'} "
                f"{self.path or 'nowhere: not writable'}); {verdict}")


def _cpu_name() -> str:
    """The CPU's model name and bf16 flags (the check is redone on another CPU)."""
    import platform

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith("model name")), platform.machine())
    flags = {f for line in text.splitlines() if line.startswith("flags")
             for f in line.split(":", 1)[1].split()}
    return " ".join([name, *sorted(flags & {"avx512_bf16", "amx_bf16", "avx512f"})])


def _bf16_paths(export: Path, metadata: dict) -> list[Path]:
    """Where the agreement is kept: in the export directory, else (a read-only export) in
    the cache root."""
    h, w = metadata["input_size"]
    return [export / BF16_AGREEMENT_FILE,
            cache_root() / "bf16_agreement"
            / f"{metadata['checkpoint_sha256'][:16]}-{h}x{w}-v{FORMAT_VERSION}.json"]


def _bf16_key(metadata: dict) -> dict:
    """What the kept agreement is valid for: the checkpoint, size, OpenVINO, CPU, inputs."""
    import openvino

    return {"checkpoint_sha256": metadata["checkpoint_sha256"],
            "input_size": list(metadata["input_size"]), "openvino": openvino.__version__,
            "cpu": _cpu_name(), "check": BF16_CHECK}


def bf16_check_inputs(metadata: dict) -> list[dict[str, torch.Tensor]]:
    """:data:`BF16_CHECK`'s frames for an export: modality -> float32 [1, 3, H, W], every
    modality of the checkpoint, prepared as its training data were (LiDAR intensity)."""
    from .checkpoint import lidar_intensity_of
    from .data.synthetic.dataset import SyntheticDataset

    meta = metadata["meta"]
    data = SyntheticDataset(num_samples=BF16_CHECK["frames"], split=BF16_CHECK["split"],
                            seed=BF16_CHECK["seed"], size_hw=metadata["input_size"],
                            modalities=meta["modalities"],
                            lidar_intensity=lidar_intensity_of(meta))
    return [{m: x[None] for m, x in data[i]["inputs"].items()} for i in range(len(data))]


def measure_bf16_agreement(export: Path, metadata: dict, bf16: "OpenVinoEngine",
                           threads: int = 0) -> dict[str, float]:
    """Per subset of ``bf16`` (an :class:`OpenVinoEngine` running bf16), the share of pixels
    whose labels equal the same graphs' in OpenVINO fp32, over :func:`bf16_check_inputs`."""
    fp32 = OpenVinoEngine(export, metadata, "fp32", threads)
    return labels_agreement(lambda subset, x: fp32.run(subset, x)[0],
                            lambda subset, x: bf16.run(subset, x)[0],
                            bf16_check_inputs(metadata),
                            [key.split("+") for key in bf16.subsets])


def bf16_agreement(export: str | Path, metadata: dict, bf16: "OpenVinoEngine",
                   threads: int = 0) -> Bf16Agreement:
    """The export's bf16 / fp32 label agreement per subset (:func:`measure_bf16_agreement`),
    measured once and kept as JSON in the export directory (:data:`BF16_AGREEMENT_FILE`; in
    the cache root where the export is read-only), then read back by later starts while the
    checkpoint, size, OpenVINO version, CPU and :data:`BF16_CHECK` are the same."""
    export = Path(export)
    key = _bf16_key(metadata)
    size = tuple(int(v) for v in metadata["input_size"])
    paths = _bf16_paths(export, metadata)
    for path in paths:
        try:
            kept = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if kept.get("key") == key and set(kept.get("subsets", {})) >= set(bf16.subsets):
            return Bf16Agreement({k: float(kept["subsets"][k]) for k in bf16.subsets}, size,
                                 BF16_CHECK["frames"], path, cached=True)
    start = time.perf_counter()
    subsets = measure_bf16_agreement(export, metadata, bf16, threads)
    record = {"key": key, "subsets": subsets, "seconds": round(time.perf_counter() - start, 2),
              "what": "per modality subset, the share of pixels whose labels in OpenVINO "
                      "bf16 equal those in OpenVINO fp32 (anyseg_core.deploy.bf16_agreement)"}
    kept_at = None
    for path in paths:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(record, indent=1))
            tmp.replace(path)  # atomic: a reader sees the old record or the whole new one
            kept_at = path
            break
        except OSError:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
    return Bf16Agreement(subsets, size, BF16_CHECK["frames"], kept_at, cached=False)
