"""From a synchronised frame of converted sensor data to published images, without ROS.

The node (and the offline bag processor) hand :class:`SegmentationPipeline` the
:class:`~anyseg_ros.sync.Frame` the synchroniser emitted, whose payloads are the
already-validated arrays made by :mod:`anyseg_ros.conversions`, plus the calibration known
at that moment. The pipeline builds the :class:`~anyseg_core.sensors.RawFrame`, runs the
shared :class:`~anyseg_core.runtime.Runtime`, and returns uint8 images ready to publish.
Everything between the upload of the raw bytes and the download of those uint8 images
stays on the runtime's device.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from anyseg_core.modalities import CAMERA, DEPTH, EVENTS, IGNORE_INDEX, LIDAR
from anyseg_core.runtime import Runtime
from anyseg_core.sensors import Events, RawFrame, camera_to_tensor, resize_dense
from anyseg_core.sensors.geometry import scale_intrinsics

from .conversions import sec_to_stamp
from .payloads import OUTPUT_RESOLUTIONS, EventImage, EventPacket, Geometry, LidarSweep
from .sync import Frame

class FrameSkipped(Exception):
    """A frame with nothing usable in it (the message says why); not a failure."""


@dataclass
class Segmentation:
    """One output frame: uint8 numpy images in the output geometry, plus what made them."""

    stamp: float
    header_stamp: tuple[int, int]  # (sec, nanosec) for the output header: the input's own
    #                                stamp, exactly, when the synchroniser was given it
    frame_id: str
    modalities: tuple[str, ...]
    pivot: str
    labels: np.ndarray
    color: np.ndarray
    overlay: Optional[np.ndarray]
    confidence: Optional[np.ndarray]
    inference_ms: float
    frame: Frame
    left_out: dict[str, str]  # modality -> why it was in the frame but not used


class SegmentationPipeline:
    """Runs frames through a :class:`Runtime`.

    Args:
        runtime: the loaded model.
        modalities: the modalities to use (a subset of the runtime's).
        event_window: seconds of events ending at the frame stamp.
        lidar_min_range: metres; nearer LiDAR points are dropped.
        output_resolution: ``camera`` (the camera image's size) or ``network``.
    """

    def __init__(self, runtime: Runtime, modalities: Sequence[str], event_window: float = 0.03,
                 lidar_min_range: float = 1.0, output_resolution: str = "camera") -> None:
        unknown = [m for m in modalities if m not in runtime.modalities]
        if unknown:
            raise ValueError(f"modalities {unknown} are not in the checkpoint, which has "
                             f"{list(runtime.modalities)}")
        if output_resolution not in OUTPUT_RESOLUTIONS:
            raise ValueError(f"output resolution must be one of {OUTPUT_RESOLUTIONS}, got "
                             f"{output_resolution!r}")
        self.runtime = runtime
        self.modalities = tuple(modalities)
        self.event_window = float(event_window)
        self.lidar_min_range = float(lidar_min_range)
        self.output_resolution = output_resolution

    # -- frame assembly ------------------------------------------------------------------
    def raw_frame(self, frame: Frame, geometry: Geometry) -> tuple[RawFrame, dict[str, str]]:
        """The RawFrame of a synchronised frame, with what had to be left out and why.

        Arrays are uploaded to the runtime's device here (once, through pinned buffers on
        CUDA)."""
        up = self.runtime.upload
        left_out: dict[str, str] = {}
        camera = self._newest(frame, CAMERA)
        K, image_hw = geometry.K, geometry.image_hw
        if camera is not None:
            cam_hw = tuple(camera.array.shape[:2])
            if K is not None and image_hw is not None and tuple(image_hw) != cam_hw:
                # CameraInfo of another binning
                K = scale_intrinsics(K, image_hw, cam_hw).numpy()
            image_hw = cam_hw
        separate_events = geometry.events_K is not None  # else: the camera's own pixels
        # LiDAR and event camera to the camera: resolved from TF when their newest message
        # arrived, else the parameters'.
        sweep, packet = self._newest(frame, LIDAR), self._newest(frame, EVENTS)
        T_cam_lidar = (sweep.T_cam_lidar if isinstance(sweep, LidarSweep)
                       and sweep.T_cam_lidar is not None else geometry.T_cam_lidar)
        T_cam_events = (packet.T_cam_events if isinstance(packet, EventPacket)
                        and packet.T_cam_events is not None else geometry.T_cam_events)
        if geometry.R_rect is not None:  # into the rectified camera's frame
            R4 = np.eye(4)
            R4[:3, :3] = geometry.R_rect
            T_cam_lidar = R4 @ T_cam_lidar
            if separate_events:
                T_cam_events = R4 @ (np.eye(4) if T_cam_events is None else T_cam_events)
        raw = RawFrame(image_hw=image_hw, K=K, distortion=geometry.distortion,
                       t_cam=frame.stamp, T_cam_lidar=T_cam_lidar, T_cam_events=T_cam_events,
                       events_K=geometry.events_K if separate_events else K,
                       events_hw=geometry.events_hw or image_hw,
                       events_distortion=geometry.distortion if separate_events else None)
        if camera is not None:
            raw.camera, raw.camera_encoding = up(CAMERA, camera.array), camera.encoding
        for mod in (LIDAR, EVENTS):
            if mod not in frame.items or mod not in self.modalities:
                continue
            if K is None or image_hw is None:
                left_out[mod] = ("no camera intrinsics yet (no CameraInfo received and no "
                                 "camera.K parameter)")
                continue
            if mod == LIDAR:
                raw.lidar = up(LIDAR, sweep.points if isinstance(sweep, LidarSweep) else sweep)
            else:
                self._set_events(raw, frame, up)
        depth = self._newest(frame, DEPTH)
        if depth is not None and DEPTH in self.modalities:
            raw.depth, raw.depth_encoding = up(DEPTH, depth.array), depth.encoding
        if raw.image_hw is None:
            # Only possible without a camera image and without calibration: nothing to draw on.
            left_out.update({m: "no output geometry yet" for m in frame.items if m not in
                             left_out})
        return raw, left_out

    @staticmethod
    def _newest(frame: Frame, sensor: str):
        items = frame.items.get(sensor)
        return items[-1].payload if items else None

    @staticmethod
    def _set_events(raw: RawFrame, frame: Frame, up) -> None:
        payloads = [item.payload.events if isinstance(item.payload, EventPacket)
                    else item.payload for item in frame.items[EVENTS]]
        images = [p for p in payloads if isinstance(p, EventImage)]
        if images:
            raw.events_image = up("events_image", images[-1].array)
            return
        packets = [p for p in payloads if isinstance(p, Events) and len(p)]
        if not packets:
            raw.events = Events(x=np.zeros(0, np.uint16), y=np.zeros(0, np.uint16),
                                t=np.zeros(0, np.float64), p=np.zeros(0, np.uint8))
        else:
            raw.events = Events(*(np.concatenate([getattr(p, a) for p in packets])
                                  for a in ("x", "y", "t", "p")))
        raw.events = Events(up("events_x", raw.events.x), up("events_y", raw.events.y),
                            up("events_t", raw.events.t), up("events_p", raw.events.p))

    # -- inference -----------------------------------------------------------------------
    def output_size(self, image_hw: Optional[Sequence[int]]) -> tuple[int, int]:
        if self.output_resolution == "network" or image_hw is None:
            return self.runtime.input_size
        return int(image_hw[0]), int(image_hw[1])

    def run(self, frame: Frame, geometry: Geometry, overlay_alpha: Optional[float] = None,
            confidence: bool = False) -> Segmentation:
        """Segment one frame. Raises :class:`FrameSkipped` when no modality of the frame is
        usable (saying why), and whatever the runtime raises (the caller decides whether a
        failure skips the frame)."""
        start = time.perf_counter()
        raw, left_out = self.raw_frame(frame, geometry)
        if raw.image_hw is None:
            raise FrameSkipped(f"no output geometry yet: {left_out}")
        inputs = self.runtime.prepare(raw, event_window=self.event_window,
                                      lidar_min_range=self.lidar_min_range)
        inputs = {m: x for m, x in inputs.items() if m in self.modalities}
        if not inputs:
            raise FrameSkipped(f"no usable modality in {sorted(frame.items)}: {left_out}")
        out_hw = self.output_size(raw.image_hw)
        pred = self.runtime.predict(inputs, output_size=out_hw, confidence=confidence)
        color = self.runtime.colorize(pred.labels)
        overlay = None
        if overlay_alpha is not None and raw.camera is not None:
            overlay = self._overlay(raw, pred.labels, color, overlay_alpha)
        labels_np = pred.labels.cpu().numpy()  # the one synchronising copy back
        source = frame.items[frame.pivot][-1]
        if CAMERA not in frame.items:  # stamp of the newest message the output is made of
            source = max((item for items in frame.items.values() for item in items),
                         key=lambda item: item.stamp)
        header_stamp = (tuple(source.exact) if source.exact is not None
                        else sec_to_stamp(source.stamp))
        camera = self._newest(frame, CAMERA)
        return Segmentation(
            stamp=source.stamp, header_stamp=header_stamp,
            frame_id=camera.frame_id if camera is not None else geometry.frame_id,
            modalities=pred.modalities, pivot=frame.pivot, labels=labels_np,
            color=color.cpu().numpy(),
            overlay=overlay.cpu().numpy() if overlay is not None else None,
            confidence=(pred.confidence.float().cpu().numpy()
                        if pred.confidence is not None else None),
            inference_ms=(time.perf_counter() - start) * 1e3, frame=frame, left_out=left_out)

    @staticmethod
    def _overlay(raw: RawFrame, labels: torch.Tensor, color: torch.Tensor,
                 alpha: float) -> torch.Tensor:
        """Camera blended with the class colours (unlabelled pixels show the camera)."""
        rgb = camera_to_tensor(raw.camera, raw.camera_encoding, labels.device)
        if tuple(rgb.shape[-2:]) != tuple(labels.shape):
            rgb = resize_dense(rgb, labels.shape)
        rgb = rgb.permute(1, 2, 0) * 255.0
        a = torch.where(labels == IGNORE_INDEX, 0.0, float(alpha))[..., None]
        return (rgb * (1 - a) + color.float() * a).round_().clamp_(0, 255).to(torch.uint8)
