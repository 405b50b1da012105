"""The one path from a :class:`RawFrame` to network inputs (training, evaluation, the ROS node)."""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import torch

from ..modalities import CAMERA, DEPTH, EVENTS, LIDAR, check_modalities
from .camera import camera_to_tensor
from .depth import depth_to_tensor
from .events import render_events
from .frame import RawFrame
from .geometry import ArrayLike, as_tensor, resolve_device, rotation_homography, scale_intrinsics
from .lidar import normalize_intensity, project_lidar
from .normalize import normalize
from .resize import resize_dense, resize_modality, resize_nearest


def _frame_device(frame: RawFrame, device: Optional[torch.device | str]) -> torch.device:
    events = frame.events
    return resolve_device(frame.camera, frame.lidar, events.x if events is not None else None,
                          frame.events_image, frame.depth, device=device)


def prepare_inputs(frame: RawFrame, size_hw: Sequence[int], modalities: Iterable[str],
                   event_window: float = 0.03, lidar_dilate: int = 0,
                   lidar_min_range: float = 1.0, event_third: str = "recency",
                   lidar_intensity: str = "raw", normalized: bool = True,
                   device: Optional[torch.device | str] = None) -> dict[str, torch.Tensor]:
    """Turn the raw sensor data of ``frame`` into float32 ``[3, h, w]`` inputs at ``size_hw``.

    Only requested modalities whose data is present (not None) appear in the result.
    camera: RGB in [0, 1], antialiased bilinear resize. lidar: projected directly at the
    network size with the scaled intrinsics (and the camera's ``distortion``, see
    :func:`project_lidar`), its intensity normalised per sweep when ``lidar_intensity`` is
    ``pNN`` (:func:`normalize_intensity`; ``raw``: as given). events: rendered
    directly at the network size over (t_cam - event_window, t_cam] (the latest
    ``event_window`` seconds when ``t_cam`` is unset/0), warped into the camera by the
    calibrated rotation (see :func:`render_events`), or, when the frame has no event stream,
    its already rendered ``events_image`` resized like an event frame. depth:
    :func:`depth_to_tensor` then a nearest-depth resize. A depth or event image must be the
    camera's view (:func:`check_aligned`). Each is then normalised with its modality's
    statistics unless ``normalized=False``. ``device=None``: the device of the frame's first
    torch tensor, else CPU. Raises ValueError naming the modality when its calibration is missing.
    """
    mods = check_modalities(modalities)
    device = _frame_device(frame, device)
    h, w = int(size_hw[0]), int(size_hw[1])
    if frame.K is None:
        need_K = [m for m, data in ((LIDAR, frame.lidar), (EVENTS, frame.events))
                  if m in mods and data is not None]
        if need_K:
            raise ValueError(f"{' and '.join(need_K)} need the camera intrinsics frame.K, "
                             "which is missing")
    out: dict[str, torch.Tensor] = {}
    for mod in mods:
        if mod == CAMERA and frame.camera is not None:
            img = camera_to_tensor(frame.camera, frame.camera_encoding, device)
            out[mod] = resize_dense(img, (h, w))
        elif mod == LIDAR and frame.lidar is not None:
            if frame.T_cam_lidar is None:
                raise ValueError("lidar needs the extrinsics frame.T_cam_lidar, which is missing")
            K = scale_intrinsics(as_tensor(frame.K, torch.float64, device), frame.image_hw, (h, w))
            out[mod] = project_lidar(frame.lidar, K, frame.T_cam_lidar, (h, w),
                                     min_range=lidar_min_range, dilate=lidar_dilate,
                                     distortion=frame.distortion, device=device)
            out[mod] = normalize_intensity(out[mod], lidar_intensity)
        elif mod == EVENTS and frame.events is not None:
            out[mod] = _render_frame_events(frame, (h, w), event_window, event_third, device)
        elif mod == EVENTS and frame.events_image is not None:
            image = _event_image_tensor(frame.events_image, device)
            check_aligned("the event image", image.shape[-2:], frame.image_hw)
            out[mod] = resize_modality(image, EVENTS, (h, w))
        elif mod == DEPTH and frame.depth is not None:
            d = depth_to_tensor(frame.depth, frame.depth_encoding, device)
            check_aligned("the depth image", d.shape[-2:], frame.image_hw)
            out[mod] = resize_modality(d, DEPTH, (h, w))
    if normalized:
        out = {mod: normalize(x, mod) for mod, x in out.items()}
    return out


def check_aligned(name: str, hw: Sequence[int], image_hw: Optional[Sequence[int]]) -> None:
    """Raise ValueError unless an image of size ``hw`` that is aligned with the frame camera
    can be: the camera's size, or another resolution of the same view (the same aspect, to
    within a pixel). A depth or event image of another aspect would be stretched out of
    alignment. No check while the camera's size is unknown (``image_hw`` None)."""
    if image_hw is None:
        return
    (h, w), (H, W) = (int(n) for n in hw), (int(n) for n in image_hw)
    if h <= 0 or w <= 0 or abs(w - W * h / H) > 1 and abs(h - H * w / W) > 1:
        raise ValueError(f"{name} is {h} x {w} pixels and the camera {H} x {W}: another "
                         "aspect ratio, so it cannot be aligned with the camera image (it "
                         "must be registered to the camera, at its size or another "
                         "resolution of it)")


def _render_frame_events(frame: RawFrame, size_hw: tuple[int, int], window: float, third: str,
                         device: torch.device) -> torch.Tensor:
    if frame.events_K is None:
        raise ValueError("events need the event camera intrinsics frame.events_K, which are "
                         "missing")
    K = scale_intrinsics(as_tensor(frame.K, torch.float64, device), frame.image_hw, size_hw)
    if frame.T_cam_events is None:
        R = torch.eye(3, dtype=torch.float64, device=device)
    else:
        R = as_tensor(frame.T_cam_events, torch.float64, device)[:3, :3]
    warp = rotation_homography(as_tensor(frame.events_K, torch.float64, device), K, R)
    t_end = frame.t_cam if frame.t_cam else None
    ev = frame.events
    return render_events(ev.x, ev.y, ev.t, ev.p, size_hw, t_end=t_end, window=window,
                         warp=warp, third=third, distortion=frame.events_distortion, K=K,
                         device=device)


def _event_image_tensor(image: ArrayLike, device: torch.device) -> torch.Tensor:
    """A rendered event frame, H x W x 3 (numpy or torch) or 3 x H x W (torch), as float32
    [3, H, W] on ``device``."""
    x = as_tensor(image, device=device)
    if x.ndim == 3 and x.shape[-1] == 3 and not (isinstance(image, torch.Tensor)
                                                 and x.shape[0] == 3):
        x = x.permute(2, 0, 1)
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"an event image must be H x W x 3 (or 3 x H x W), got shape "
                         f"{tuple(x.shape)}")
    x = x.to(torch.float32)
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(f"the event image has {bad} non-finite values (NaN or inf)")
    return x


def prepare_label(label: ArrayLike, size_hw: Sequence[int],
                  device: Optional[torch.device | str] = None) -> torch.Tensor:
    """Train-id label ``[H, W]`` -> int64 ``[h, w]`` by nearest neighbour (255 stays 255)."""
    lab = as_tensor(label, device=resolve_device(label, device=device))
    if lab.ndim != 2:
        raise ValueError(f"label must be H x W, got shape {tuple(lab.shape)}")
    return resize_nearest(lab, size_hw).to(torch.int64)
