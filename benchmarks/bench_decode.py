"""Benchmark the decode cost of a compressed 1920x1080 camera frame as a share of its path.

    python benchmarks/bench_decode.py [--repeats N] [--threads T] [--quality Q] [--size H W]

Workload: one 1920x1080 camera frame, the KITTI camera image (../shared/data/real/
kitti_000008, 1242x375) scaled to 1080 rows (x2.88, bicubic) and centre-cropped to 1920
columns; without the shared data, the synthetic world's camera rendered at 960x540 and
upsampled x2. Upsampling leaves a smoother picture than a 1080p sensor gives, so the
frame is also timed with sensor-like noise added (Gaussian, sigma 3 grey levels): a JPEG's
decode time grows with its size (bits a pixel), and the second row shows by how much. Each
is encoded as image_transport's compressed plugin does (BGR, JPEG
quality 90 here) into a CompressedImage, and the same pixels go into a raw rgb8 Image
(rclpy's sensor_msgs classes when installed, else SimpleNamespace). Building them is not
timed.

Timed, in turn in one process (``measure`` of bench_sensors: blocks of calls, each function
warmed by itself): ``compressed_to_array`` (header checks, ``cv2.imdecode``, BGR -> RGB in
place), ``cv2.imdecode`` alone, ``image_to_array`` of the raw Image (a view), and the
network's part of the frame's path on the demo checkpoint
(anyseg_ros/checkpoints/demo.safetensors, the node's default when no checkpoint is given)
at the node's default network size (``network.height/width`` 0: the checkpoint's own, 128x224
for the demo): ``Runtime.prepare`` of the camera-only RawFrame (resize and normalise) and
``Runtime.predict`` on the prepared input (``--size`` to take another network size). The
decode share is decode / (decode + prepare + predict), each a median of the same run.
The decoded image is checked first to give labels equal to the raw image's on all but a
few pixels (JPEG is lossy).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_sensors import measure  # noqa: E402

from anyseg_core.runtime import Runtime  # noqa: E402
from anyseg_core.sensors import RawFrame  # noqa: E402
from anyseg_ros import conversions as conv  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
H, W = 1080, 1920
K = np.array([[1000.0, 0.0, 959.5], [0.0, 1000.0, 539.5], [0.0, 0.0, 1.0]])
STAMP = 1_700_000_000.0
KITTI = REPO.parent / "shared" / "data" / "real" / "kitti_000008" / "000008.png"
CHECKPOINT = REPO / "anyseg_ros" / "checkpoints" / "demo.safetensors"


def camera_frame(cv2) -> tuple[np.ndarray, str]:
    """(1080 x 1920 x 3 uint8 RGB, where it came from)."""
    if KITTI.is_file():
        bgr = cv2.imread(str(KITTI), cv2.IMREAD_COLOR)
        scale = H / bgr.shape[0]
        wide = cv2.resize(bgr, (round(bgr.shape[1] * scale), H), interpolation=cv2.INTER_CUBIC)
        x0 = (wide.shape[1] - W) // 2
        return (np.ascontiguousarray(wide[:, x0:x0 + W, ::-1]),
                f"KITTI 000008 camera ({bgr.shape[1]}x{bgr.shape[0]}) scaled x{scale:.2f}, "
                f"centre {W}x{H}")
    from anyseg_core.data.synthetic import Condition, RigConfig, generate_scene, render_frame

    frame = render_frame(RigConfig(image_hw=(H // 2, W // 2)), generate_scene(0),
                         Condition.parse("clear-day"), 0)
    rgb = cv2.resize(np.asarray(frame.camera), (W, H), interpolation=cv2.INTER_CUBIC)
    return rgb, f"synthetic camera render {W // 2}x{H // 2} upsampled x2"


def image_class():
    try:
        from sensor_msgs.msg import CompressedImage, Image
    except ImportError:
        return "SimpleNamespace (no sensor_msgs)", SimpleNamespace, SimpleNamespace
    return "rclpy sensor_msgs", Image, CompressedImage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads, and OpenCV's (cv2.setNumThreads)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="network input size (default: the checkpoint's)")
    args = parser.parse_args()
    cv2 = conv.require_opencv()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    kind, image_cls, compressed_cls = image_class()
    clean, source = camera_frame(cv2)
    noise = np.random.default_rng(0).normal(0.0, 3.0, clean.shape)
    noisy = np.clip(clean + noise, 0, 255).astype(np.uint8)
    runtime = Runtime(CHECKPOINT, device="cpu", input_size=args.size, warmup=True)

    def prepare(rgb):
        return runtime.prepare(RawFrame(image_hw=(H, W), K=K, camera=rgb,
                                        camera_encoding="rgb8"))

    rows = []
    for name, rgb in (("as scaled", clean), ("+ noise sigma 3", noisy)):
        raw = conv.array_to_image(rgb, "rgb8", STAMP, "camera", cls=image_cls)
        jpeg = conv.array_to_compressed(rgb, "rgb8", STAMP, "camera", quality=args.quality,
                                        cls=compressed_cls)
        payload = np.frombuffer(jpeg.data, np.uint8)
        decoded, encoding = conv.compressed_to_array(jpeg)
        from_raw, raw_encoding = conv.image_to_array(raw, conv.CAMERA_ENCODINGS)
        assert encoding == raw_encoding == "rgb8" and decoded.shape == from_raw.shape
        error = float(np.abs(decoded.astype(np.int16) - from_raw).mean())
        inputs = prepare(from_raw)
        agree = float((runtime.predict(prepare(decoded)).labels
                       == runtime.predict(inputs).labels).float().mean())
        if agree < 0.95:
            raise SystemExit(f"{name}: labels of the decoded frame agree on only "
                             f"{100 * agree:.1f} % of pixels")
        timings = measure([
            lambda: conv.compressed_to_array(jpeg),
            lambda: cv2.imdecode(payload, cv2.IMREAD_UNCHANGED),
            lambda: conv.image_to_array(raw, conv.CAMERA_ENCODINGS),
            lambda: prepare(from_raw),
            lambda: runtime.predict(inputs),
        ], args.repeats, lambda: None)
        ours, imdecode, view, prep, infer = (ms for ms, _ in timings)
        rows.append((name, payload.size, ours, imdecode, view, prep, infer, error, agree))

    net_h, net_w = runtime.input_size
    print(f"frame: {source}; JPEG quality {args.quality}; messages: {kind}; network "
          f"{net_h}x{net_w} (demo checkpoint, camera only, CPU); torch threads "
          f"{torch.get_num_threads()}, OpenCV threads {cv2.getNumThreads()}; median of "
          f"{args.repeats}; OpenCV {cv2.__version__}, torch {torch.__version__}\n")
    print("| 1920x1080 frame | JPEG KiB (bits/pixel) | `compressed_to_array` ms | "
          "`cv2.imdecode` alone ms | raw `image_to_array` ms | `Runtime.prepare` ms | "
          "`Runtime.predict` ms | decode share of decode + prepare + predict | "
          "mean abs error | labels equal |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, size, ours, imdecode, view, prep, infer, error, agree in rows:
        print(f"| {name} | {size / 1024:.0f} ({8 * size / (H * W):.2f}) | {ours:.2f} | "
              f"{imdecode:.2f} | {view:.3f} | {prep:.2f} | {infer:.1f} | "
              f"{100 * ours / (ours + prep + infer):.0f} % | {error:.2f} | "
              f"{100 * agree:.1f} % |")


if __name__ == "__main__":
    main()
