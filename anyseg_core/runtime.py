"""The inference runtime shared by ``anyseg_core.evaluate`` and the ROS node.

Loads a checkpoint (never unpickling), picks the device and precision, warms up every
modality subset (so the first frame after a sensor drops out is not slow), and predicts
class ids (uint8, 255 = ignore) and optionally a confidence map from raw frames or prepared
inputs with any subset of modalities present. Everything stays on the device until the
caller asks for numpy.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import torch

from . import checkpoint as ckpt
from .modalities import IGNORE_INDEX, NORMALIZATION, all_subsets
from .sensors import RawFrame, as_tensor, prepare_inputs, resize_nearest

PRECISIONS = ("fp32", "fp16", "bf16")


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
    """

    def __init__(self, checkpoint: str | Path, device: str = "auto", precision: str = "fp32",
                 input_size: Optional[Sequence[int]] = None, warmup: bool = True,
                 min_confidence: float = 0.0) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = pick_device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision fp16 needs a CUDA device; use fp32 (or bf16) on CPU")
        self.precision = precision
        self.model, self.meta = ckpt.build_model(checkpoint, device=self.device)
        self.model.eval().requires_grad_(False)
        if self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        self.modalities: tuple[str, ...] = tuple(self.meta["modalities"])
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

    def _autocast(self):
        if self.precision == "fp32":
            return nullcontext()
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    def warmup(self) -> None:
        """One forward pass per non-empty subset (kernels, allocator, autotuning)."""
        H, W = self.input_size
        for subset in all_subsets(self.modalities):
            x = {m: torch.zeros(1, 3, H, W, device=self.device) for m in subset}
            self.predict(x)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

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
        such a modality raises a ValueError naming it instead of giving wrong labels."""
        inputs = prepare_inputs(frame, self.input_size, self.modalities,
                                event_window=event_window, lidar_min_range=lidar_min_range,
                                device=self.device)
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
        if self.device.type == "cuda":
            x = {m: v.contiguous(memory_format=torch.channels_last) for m, v in x.items()}
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
