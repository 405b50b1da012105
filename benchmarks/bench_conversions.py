"""Benchmark ROS message -> network input: anyseg_ros.conversions vs a copy-everything baseline.

    python benchmarks/bench_conversions.py [--repeats N] [--threads T] [--size H W]

Workload: a 1920x1080 rgb8 Image and a 120k-point PointCloud2 in an Ouster-like layout
(x, y, z, 4 padding bytes, intensity, t, reflectivity, ring, ambient, range: 48 bytes a
point, ``is_dense`` false with 1 % NaN points), taken to network inputs at 288x512 by
anyseg_core.sensors.prepare_inputs (camera: resize; LiDAR: projection with a plausible K
and T_cam_lidar). Messages are rclpy's (sensor_msgs) when installed, else SimpleNamespace
messages with the same fields; building them is not timed.

Timed per input: the conversion alone (ours; the baseline) and conversion + prepare_inputs
(ours; the baseline). The baseline is what a user without this module writes: copy
``msg.data`` with ``np.array`` and then, for the image, cv_bridge's reshape (a view when
unpadded, ``ascontiguousarray`` otherwise); for the cloud, sensor_msgs_py's
``read_points_numpy(skip_nans=True)`` (a structured array over every field, a per-field NaN
mask, ``structured_to_unstructured``). Both give the same arrays, checked before timing.
"""
from __future__ import annotations

import argparse
import array
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from numpy.lib.recfunctions import structured_to_unstructured

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_sensors import T_CAM_LIDAR, K, make_lidar, measure  # noqa: E402

from anyseg_core.sensors import RawFrame, prepare_inputs  # noqa: E402
from anyseg_ros import conversions as conv  # noqa: E402

H, W = 1080, 1920
N_POINTS = 120_000
STAMP = 1_700_000_000.0
#: Ouster OS-1 point layout (its ROS driver's PointXYZIRT-like point, 48 bytes).
OUSTER_POINT = np.dtype({
    "names": ["x", "y", "z", "intensity", "t", "reflectivity", "ring", "ambient", "range"],
    "formats": ["<f4", "<f4", "<f4", "<f4", "<u4", "<u2", "<u2", "<u2", "<u4"],
    "offsets": [0, 4, 8, 16, 20, 24, 26, 28, 32], "itemsize": 48})


def message_classes() -> tuple[str, type, type, type]:
    """(what they are, Image, PointCloud2, PointField) classes."""
    try:
        from sensor_msgs.msg import Image, PointCloud2, PointField
    except ImportError:
        return "SimpleNamespace (no sensor_msgs)", SimpleNamespace, SimpleNamespace, SimpleNamespace
    return "rclpy sensor_msgs", Image, PointCloud2, PointField


def make_image_msg(image_cls: type, rng: np.random.Generator):
    pixels = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    return conv.array_to_image(pixels, "rgb8", STAMP, "camera", cls=image_cls)


def make_cloud_msg(cloud_cls: type, field_cls: type, rng: np.random.Generator):
    xyzi = make_lidar(N_POINTS, rng).astype(np.float32)
    xyzi[rng.random(N_POINTS) < 0.01, :3] = np.nan  # no return
    points = np.zeros(N_POINTS, OUSTER_POINT)
    for column, name in enumerate(("x", "y", "z", "intensity")):
        points[name] = xyzi[:, column]
    points["ring"] = rng.integers(0, 128, N_POINTS)
    datatypes = {np.dtype("<f4"): 7, np.dtype("<u4"): 6, np.dtype("<u2"): 4}
    fields = [field_cls(name=name, offset=offset, datatype=datatypes[dtype], count=1)
              for name, (dtype, offset) in OUSTER_POINT.fields.items()]
    data = array.array("B")  # what rclpy holds
    data.frombytes(points.view(np.uint8))
    # The builder makes the header; the layout is then replaced by the padded one.
    msg = conv.points_to_cloud({"x": np.zeros(0, np.float32)}, STAMP, "lidar", cls=cloud_cls,
                               field_cls=field_cls)
    msg.width, msg.fields, msg.point_step = N_POINTS, fields, OUSTER_POINT.itemsize
    msg.row_step, msg.data, msg.is_dense = OUSTER_POINT.itemsize * N_POINTS, data, False
    return msg


def baseline_image(msg) -> np.ndarray:
    """np.array copy of the data, then cv_bridge's imgmsg_to_cv2 reshape for rgb8."""
    data = np.array(msg.data, dtype=np.uint8)
    image = np.ndarray(shape=(msg.height, msg.step // 3, 3), dtype=np.uint8, buffer=data)
    return np.ascontiguousarray(image[:, :msg.width, :])


def baseline_cloud(msg) -> np.ndarray:
    """np.array copy of the data, then sensor_msgs_py's read_points_numpy(field_names=x, y,
    z, intensity, skip_nans=True)."""
    data = np.array(msg.data, dtype=np.uint8)
    sizes = {7: "<f4", 6: "<u4", 4: "<u2"}
    all_fields = np.dtype({"names": [f.name for f in msg.fields],
                           "formats": [sizes[f.datatype] for f in msg.fields],
                           "offsets": [f.offset for f in msg.fields],
                           "itemsize": msg.point_step})
    points = np.ndarray(shape=(msg.width * msg.height,), dtype=all_fields, buffer=data)
    points = points[["x", "y", "z", "intensity"]]
    if not msg.is_dense:
        not_nan = np.ones(len(points), dtype=bool)
        for name in points.dtype.names:
            not_nan = np.logical_and(not_nan, ~np.isnan(points[name]))
        points = points[not_nan]
    return structured_to_unstructured(points)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--size", type=int, nargs=2, default=(288, 512), metavar=("H", "W"),
                        help="network input size")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size_hw = tuple(args.size)
    kind, image_cls, cloud_cls, field_cls = message_classes()
    rng = np.random.default_rng(0)
    image_msg = make_image_msg(image_cls, rng)
    cloud_msg = make_cloud_msg(cloud_cls, field_cls, rng)

    def camera_ours():
        return conv.image_to_array(image_msg, conv.CAMERA_ENCODINGS)[0]

    def lidar_ours():
        return conv.lidar_points(cloud_msg)[0]

    def to_input(modality, converted):
        if modality == "camera":
            frame = RawFrame(image_hw=(H, W), K=K, camera=converted, camera_encoding="rgb8")
        else:
            frame = RawFrame(image_hw=(H, W), K=K, lidar=converted, T_cam_lidar=T_CAM_LIDAR)
        return prepare_inputs(frame, size_hw, [modality])[modality]

    def end_to_end(modality, convert):
        return lambda: to_input(modality, convert())

    cases = {"camera": ("1920x1080 rgb8 Image", camera_ours, lambda: baseline_image(image_msg)),
             "lidar": (f"{N_POINTS // 1000}k-point PointCloud2", lidar_ours,
                       lambda: baseline_cloud(cloud_msg))}
    rows = []
    for modality, (name, ours, baseline) in cases.items():
        ours_array, base_array = ours(), baseline()
        if not np.array_equal(ours_array, base_array):
            raise SystemExit(f"{name}: ours and the baseline disagree")
        if not torch.equal(to_input(modality, ours_array), to_input(modality, base_array)):
            raise SystemExit(f"{name}: the network inputs disagree")
        (conv_ours, _), (conv_base, _), (full_ours, _), (full_base, _) = measure(
            [ours, baseline, end_to_end(modality, ours), end_to_end(modality, baseline)],
            args.repeats, lambda: None)
        rows.append((name, conv_ours, conv_base, full_ours, full_base))

    print(f"messages: {kind}; network input {size_hw[0]}x{size_hw[1]}; torch threads "
          f"{torch.get_num_threads()}; median of {args.repeats}; torch {torch.__version__}, "
          f"numpy {np.__version__}; outputs identical\n")
    print("| input | conversion ms | baseline conversion ms | baseline / ours "
          "| to network input ms | baseline to network input ms | conversion share |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, conv_ours, conv_base, full_ours, full_base in rows:
        print(f"| {name} | {conv_ours:.3f} | {conv_base:.3f} | {conv_base / conv_ours:.1f} "
              f"| {full_ours:.1f} | {full_base:.1f} | {100 * conv_ours / full_ours:.1f} % |")


if __name__ == "__main__":
    main()
