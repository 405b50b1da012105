"""The inference runtime shared by ``anyseg_core.evaluate`` and the ROS node.

Loads a checkpoint (never unpickling), picks the device and precision, warms up every
modality subset (so the first frame after a sensor drops out is not slow), and predicts
class ids (uint8, 255 = ignore) and optionally a confidence map from raw frames or prepared
inputs with any subset of modalities present. Everything stays on the device until the
caller asks for numpy.

``backend`` chooses what runs the network: ``torch`` (PyTorch eager), or an exported graph
per modality subset (:mod:`anyseg_core.deploy`) in ``onnxruntime`` or ``openvino``. Given a
``.safetensors`` checkpoint, an exported backend exports it once (cached by the file's
sha256 and the size); given an export directory, it loads it. ``auto`` is the fastest
backend installed for the device (:data:`AUTO_BACKENDS`, from docs/benchmarks.md).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import torch

from . import checkpoint as ckpt
from . import deploy
from .modalities import IGNORE_INDEX, NORMALIZATION, all_subsets
from .sensors import RawFrame, as_tensor, prepare_inputs, resize_nearest

PRECISIONS = ("fp32", "fp16", "bf16")
BACKENDS = ("auto",) + deploy.BACKENDS
#: What ``auto`` picks, in order, per device type: the first one installed. On the CPU
#: OpenVINO (fp32) is the fastest with every label equal to PyTorch's, ONNX Runtime at most as
#: fast as PyTorch eager, each measured in a process of its own (docs/benchmarks.md,
#: benchmarks/bench_backends.py); on CUDA no GPU measurement yet.
AUTO_BACKENDS = {"cpu": ("openvino", "onnxruntime", "torch"), "cuda": ("torch",)}


def backend_installed(backend: str) -> bool:
    """Whether the package a backend needs imports here (torch always does)."""
    if backend == "torch":
        return True
    import importlib.util

    return all(importlib.util.find_spec(p) is not None
               for p in ("onnx", "onnxscript", backend))


def backend_runs(backend: str, device: torch.device, precision: str) -> bool:
    """Whether ``backend`` runs ``precision`` on ``device`` (see :class:`Runtime`)."""
    if backend == "openvino":
        return device.type == "cpu" and precision in ("fp32", "bf16")
    if backend == "onnxruntime":
        return precision == "fp32" or (device.type == "cuda" and precision == "fp16")
    return True


def resolve_backend(backend: str, device: torch.device, precision: str = "fp32",
                    exported: bool = False) -> str:
    """``auto`` -> the first of AUTO_BACKENDS for the device that is installed and runs
    ``precision`` (for an ``exported`` model, the first exported backend that does); a named
    backend is checked to be installed."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        order = AUTO_BACKENDS[device.type]
        if exported:
            order = tuple(b for b in (*order, "onnxruntime") if b != "torch")
        return next((b for b in order if backend_installed(b)
                     and backend_runs(b, device, precision)), order[-1])
    if not backend_installed(backend):
        raise ValueError(f"backend {backend} is not installed here: pip install "
                         "'anyseg_ros[deploy]' (onnx, onnxscript, onnxruntime, openvino)")
    return backend


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA "
                             f"device(s) here")
    elif device.type != "cpu":
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return device


@dataclass
class Prediction:
    """labels: uint8 [H, W] class ids (255 = ignore); confidence: float32 [H, W] softmax
    probability of the predicted class, or None; both on the runtime's device."""

    labels: torch.Tensor
    confidence: Optional[torch.Tensor]
    modalities: tuple[str, ...]


class Runtime:
    """A segmentor ready to serve.

    Args:
        checkpoint: path of a ``.safetensors`` checkpoint written by anyseg_core.
        device: auto | cpu | cuda | cuda:N.
        precision: fp32 | fp16 | bf16 (fp16 needs CUDA).
        input_size: network input (H, W); default the checkpoint's training size.
        warmup: run every modality subset once at start.
        min_confidence: pixels whose confidence is below it become 255 (0 = never).
        backend: auto | torch | onnxruntime | openvino (module docstring); ``checkpoint``
            may then also be an export directory (``python -m anyseg_core.export --format
            onnx``). onnxruntime runs fp32 on a CPU, fp32 or fp16 on CUDA (TensorRT's
            execution provider where present); openvino runs on the CPU in fp32 or bf16.
        threads: CPU threads of an exported backend (0: its default, one per core).
        spinning: onnxruntime: whether its worker threads spin (busy-wait) between ops and
            after a run instead of sleeping (its ``session.intra_op.allow_spinning``); None =
            off on a CPU (spinning threads took CPU time from the sensor processing that
            follows each run: docs/benchmarks.md), ONNX Runtime's default (on) on CUDA.

    Attributes set at start besides the arguments: ``backend`` (the one running),
    ``precision`` (the one running: bf16 asked of OpenVINO on a CPU without bf16 runs fp32),
    ``bf16_agreement`` (where OpenVINO runs bf16, a :class:`~anyseg_core.deploy.Bf16Agreement`:
    per subset, the share of pixels whose bf16 labels equal fp32's, measured once per export
    and CPU and kept beside the export; else None).
    """

    def __init__(self, checkpoint: str | Path, device: str = "auto", precision: str = "fp32",
                 input_size: Optional[Sequence[int]] = None, warmup: bool = True,
                 min_confidence: float = 0.0, backend: str = "torch",
                 threads: int = 0, spinning: Optional[bool] = None) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = pick_device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision fp16 needs a CUDA device; use fp32 (or bf16) on CPU")
        self.precision = precision
        exported = deploy.is_export(checkpoint)
        self.backend = resolve_backend(backend, self.device, precision, exported)
        if self.backend != "torch" and not backend_installed(self.backend):
            raise ValueError(f"{checkpoint} is an exported model and no exported backend is "
                             "installed here: pip install 'anyseg_ros[deploy]'")
        self.model = None
        self.engine = None
        self.bf16_agreement: Optional[deploy.Bf16Agreement] = None
        if self.backend == "torch":
            if exported:
                raise ValueError(f"{checkpoint} is an exported model: run it with backend "
                                 "onnxruntime or openvino, or give the .safetensors "
                                 "checkpoint to backend torch")
            self.model, self.meta = ckpt.build_model(checkpoint, device=self.device)
            self.model.eval().requires_grad_(False)
            if self.device.type == "cuda":
                self.model.to(memory_format=torch.channels_last)
        else:
            export = self._exported(checkpoint, exported, input_size, threads, spinning)
            input_size = export["input_size"]
        self.modalities: tuple[str, ...] = tuple(self.meta["modalities"])
        #: the LiDAR intensity normalisation of the checkpoint's training (``prepare``
        #: applies it): ``raw`` or ``pNN``
        self.lidar_intensity: str = ckpt.lidar_intensity_of(self.meta)
        self.class_names: list[str] = list(self.meta["class_names"])
        self.palette = torch.zeros(256, 3, dtype=torch.uint8, device=self.device)
        self.palette[: len(self.meta["palette"])] = torch.tensor(self.meta["palette"],
                                                                 dtype=torch.uint8)
        size = input_size or self.meta["input_size"]
        if len(size) != 2 or any(int(v) <= 0 or int(v) % 32 for v in size):
            raise ValueError(f"input size must be [H, W], positive and divisible by 32, got "
                             f"{list(size)}")
        self.input_size = (int(size[0]), int(size[1]))
        self.min_confidence = float(min_confidence)
        # Pinned host buffers, one per stream, and the event marking each one's last copy.
        self._staging: dict[str, torch.Tensor] = {}
        self._staged: dict[str, torch.cuda.Event] = {}
        if warmup:
            self.warmup()

    def _exported(self, checkpoint, exported: bool, input_size, threads: int,
                  spinning: Optional[bool]) -> dict:
        """Build ``self.engine`` from an export directory, made from the checkpoint (and
        cached) unless ``checkpoint`` is one; returns the export's metadata."""
        if self.backend == "openvino":
            if self.device.type != "cpu":
                raise ValueError("backend openvino runs on the CPU here; use device cpu, or "
                                 "backend onnxruntime / torch on CUDA")
            if self.precision == "fp16":
                raise ValueError("backend openvino: precision fp32 or bf16")
        elif self.device.type == "cpu" and self.precision != "fp32":
            raise ValueError("backend onnxruntime on a CPU runs fp32 only; for bf16 use "
                             "backend openvino")
        elif self.precision == "bf16":
            raise ValueError("backend onnxruntime on CUDA: precision fp32 or fp16")
        graphs = "fp16" if self.precision == "fp16" else "fp32"
        if exported:
            path = Path(checkpoint)
            export = deploy.read_export(path)
            if input_size is not None and tuple(input_size) != tuple(export["input_size"]):
                raise ValueError(f"{path} was exported at {export['input_size']}, not "
                                 f"{list(input_size)}: export it at that size")
            if export["precision"] != graphs:
                raise ValueError(f"{path} holds {export['precision']} graphs; precision "
                                 f"{self.precision} needs {graphs} ones")
        else:
            size = input_size or ckpt.read_metadata(checkpoint)["input_size"]
            path = deploy.cached_export(checkpoint, size, graphs)
            export = deploy.read_export(path)
        self.meta = export["meta"]
        self.export_path = path
        if self.backend == "onnxruntime":
            self.engine = deploy.OnnxRuntimeEngine(path, export, self.device, threads,
                                                   spinning=spinning)
        else:
            self.engine = deploy.OpenVinoEngine(path, export, self.precision, threads)
            if self.engine.precision != self.precision:  # bf16 asked, no bf16 on this CPU
                import warnings
                warnings.warn(f"backend openvino runs {self.engine.precision} here: this CPU "
                              f"has no {self.precision} instructions", RuntimeWarning)
                self.precision = self.engine.precision
            if self.engine.precision == "bf16":
                self.bf16_agreement = deploy.bf16_agreement(path, export, self.engine,
                                                            threads)
        return export

    def _autocast(self):
        if self.precision == "fp32":
            return nullcontext()
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    def warmup(self) -> None:
        """One forward pass per non-empty subset (kernels, allocator, autotuning)."""
        H, W = self.input_size
        for subset in self.subsets():
            x = {m: torch.zeros(1, 3, H, W, device=self.device) for m in subset}
            self.predict(x)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def subsets(self) -> list[tuple[str, ...]]:
        """The modality subsets this runtime can run: every one, or those of its export."""
        if self.engine is None:
            return all_subsets(self.modalities)
        return [s for s in all_subsets(self.modalities)
                if deploy.subset_key(s) in self.engine.subsets]

    def upload(self, name: str, array) -> torch.Tensor:
        """A numpy array (or CPU tensor) on the runtime's device, ready for
        :func:`~anyseg_core.sensors.prepare_inputs`.

        On CPU it is wrapped without a copy where numpy allows. On CUDA the bytes go through
        a pinned host buffer kept per ``name`` (grown as needed, never freed while serving)
        and are copied asynchronously, so one raw copy is the only host work per sensor.
        The next call for the same name reuses the buffer; it first waits for the previous
        copy out of it to finish (a CUDA event), so callers need no synchronisation.
        """
        if self.device.type != "cuda":
            return as_tensor(array, device=self.device)
        src = array if isinstance(array, torch.Tensor) else as_tensor(array)
        flat = src.reshape(-1) if src.is_contiguous() else src.contiguous().reshape(-1)
        if name in self._staged:
            self._staged[name].synchronize()
        buf = self._staging.get(name)
        if buf is None or buf.dtype != flat.dtype or buf.numel() < flat.numel():
            buf = torch.empty(max(flat.numel(), 1), dtype=flat.dtype, pin_memory=True)
            self._staging[name] = buf
        staged = buf[: flat.numel()]
        staged.copy_(flat)
        out = staged.view(src.shape).to(self.device, non_blocking=True)
        self._staged[name] = torch.cuda.Event()
        # On the stream of the runtime's device, which queued the copy: a bare record() uses
        # the current device's, which is another GPU for a Runtime on cuda:1, say.
        self._staged[name].record(torch.cuda.current_stream(self.device))
        return out

    def prepare(self, frame: RawFrame, event_window: float = 0.03,
                lidar_min_range: float = 1.0) -> dict[str, torch.Tensor]:
        """Network inputs [1, 3, H, W] of the frame's modalities, on the device.

        Raw sensor data are normalised with the raw-sensor statistics
        (``anyseg_core.modalities.NORMALIZATION``); a checkpoint trained on inputs normalised
        otherwise (DELIVER's pre-rendered images, say) cannot read them, and a frame holding
        such a modality raises a ValueError naming it instead of giving wrong labels. The
        LiDAR's intensity is normalised per sweep as the checkpoint was trained
        (:attr:`lidar_intensity`, from its metadata)."""
        inputs = prepare_inputs(frame, self.input_size, self.modalities,
                                event_window=event_window, lidar_min_range=lidar_min_range,
                                lidar_intensity=self.lidar_intensity, device=self.device)
        foreign = [m for m in inputs if not self.reads_raw(m)]
        if foreign:
            raise ValueError(
                f"this checkpoint was trained on {', '.join(foreign)} inputs normalised as "
                f"{ {m: self.meta['normalization'][m] for m in foreign} }, not as raw sensor "
                f"data are ({ {m: NORMALIZATION[m] for m in foreign} }): give it inputs "
                "prepared like its training data, or use a checkpoint trained on raw sensors")
        return {m: x[None] for m, x in inputs.items()}

    def reads_raw(self, modality: str) -> bool:
        """Whether the checkpoint's normalisation of ``modality`` is the raw-sensor one."""
        stats = self.meta["normalization"][modality]
        mean, std = NORMALIZATION[modality]
        return all(abs(float(a) - b) <= 1e-6 * max(1.0, abs(b))
                   for a, b in zip([*stats["mean"], *stats["std"]], [*mean, *std]))

    @torch.inference_mode()
    def predict(self, inputs: Mapping[str, torch.Tensor] | RawFrame,
                output_size: Optional[Sequence[int]] = None, confidence: bool = False,
                missing: str = "drop") -> Prediction:
        """Class ids of one sample from raw data (a RawFrame) or prepared inputs
        (modality -> [1, 3, H, W] or [3, H, W], normalised); whatever modalities are given
        are used. ``output_size`` resizes the labels (nearest) and confidence."""
        if isinstance(inputs, RawFrame):
            inputs = self.prepare(inputs)
        x = {m: (v if v.ndim == 4 else v[None]).to(self.device, dtype=torch.float32,
                                                   non_blocking=True)
             for m, v in inputs.items()}
        unknown = [m for m in x if m not in self.modalities]
        if unknown:
            raise ValueError(f"the checkpoint has no modality {unknown}; it knows "
                             f"{list(self.modalities)}")
        if not x:
            raise ValueError("no input modality: give at least one of "
                             f"{list(self.modalities)}")
        if self.engine is not None:
            if missing != "drop":
                raise ValueError(f"backend {self.backend} runs missing='drop' only")
            subset = tuple(m for m in self.modalities if m in x)
            if deploy.subset_key(subset) not in self.engine.subsets:
                raise ValueError(f"{self.export_path} has no graph for the modalities "
                                 f"{list(subset)} (exported: {sorted(self.engine.subsets)})")
            labels, conf = self.engine.run(subset, x)
            labels, conf = labels.to(self.device), conf.to(self.device)
        else:
            if self.device.type == "cuda":
                x = {m: v.contiguous(memory_format=torch.channels_last)
                     for m, v in x.items()}
            with self._autocast():
                logits = self.model(x, missing=missing).logits[0]
            prob = torch.softmax(logits.float(), dim=0)
            conf, labels = prob.max(0)
            labels = labels.to(torch.uint8)
        if self.min_confidence > 0:
            labels[conf < self.min_confidence] = IGNORE_INDEX
        if output_size is not None and tuple(output_size) != tuple(labels.shape):
            labels = resize_nearest(labels, output_size)
            conf = resize_nearest(conf, output_size) if confidence else conf
        return Prediction(labels=labels, confidence=conf if confidence else None,
                          modalities=tuple(m for m in self.modalities if m in x))

    def predict_labels(self, inputs: Mapping[str, torch.Tensor], output_size=None,
                       missing: str = "drop") -> torch.Tensor:
        """Only the class ids of :meth:`predict` (the signature ``evaluate`` expects)."""
        return self.predict(inputs, output_size=output_size, missing=missing).labels

    def colorize(self, labels: torch.Tensor) -> torch.Tensor:
        """uint8 [H, W] class ids -> uint8 [H, W, 3] RGB from the checkpoint's palette (on the
        device; 255 and unknown ids are black)."""
        return self.palette[labels.long()]
