"""The label image's CameraInfo (``/anyseg/camera_info``) describes the label image.

With ``output.resolution: network`` the labels come out at the network size, not the
camera's, and their CameraInfo must carry that size and the camera's K scaled to it; at the
camera resolution scaling changes nothing, so a K left unscaled only shows here. The
expected K is written out from the pixel-centre convention (u' = (u + 0.5) * sx - 0.5 for a
resize by sx = W' / W), not taken from the code under test.
"""
from __future__ import annotations

import numpy as np
import pytest

from anyseg_ros import conversions as conv
from anyseg_ros import session as S
from anyseg_ros.params import load_params_file
from anyseg_ros.tools import bag as bags
from anyseg_ros.tools.process_bag import process_bag
from anyseg_ros.tools.synthetic_bag import write_synthetic_bag

NET_HW = (64, 96)  # the random checkpoint's size (conftest.py)
CAMERA_HW = (48, 80)  # not the network's aspect ratio: rows and columns scale differently
ROLE_OF = {bags.TOPICS["camera"]: "camera", bags.TOPICS["lidar"]: "lidar",
           bags.TOPICS["events"]: "events"}


class _Quiet:
    def info(self, text: str) -> None:
        pass

    warning = error = info


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    bag = tmp_path_factory.mktemp("label_info_bag") / "drive"
    write_synthetic_bag(bag, 0.6, "clear-day", None, 3, CAMERA_HW, progress=False)
    return bag


def _values(bag, checkpoint, resolution: str) -> dict:
    values = load_params_file(bags.params_path(bag))
    values.update({"device": "cpu", "network.height": NET_HW[0], "network.width": NET_HW[1],
                   "checkpoint": str(checkpoint), "output.resolution": resolution})
    return values


def _camera_K(bag) -> tuple[np.ndarray, tuple[int, int]]:
    msg = next(bags.read_bag(bag, [bags.TOPICS["camera_info"]])).decode()
    return np.asarray(msg.k, dtype=np.float64).reshape(3, 3), (int(msg.height), int(msg.width))


def _scaled(K: np.ndarray, src_hw, dst_hw) -> np.ndarray:
    sy, sx = dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1]
    out = K.copy()
    out[0, 0], out[0, 1] = K[0, 0] * sx, K[0, 1] * sx
    out[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    out[1, 1] = K[1, 1] * sy
    out[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return out


def _first_result(session: S.Session, bag):
    """Feed the bag to the session until it segments a frame after the first CameraInfo
    (a bag's first camera image comes just before it); that result."""
    for m in bags.read_bag(bag, [*ROLE_OF, bags.TOPICS["camera_info"],
                                 bags.TOPICS["tf_static"]]):
        now = m.time_ns * 1e-9
        if m.topic == bags.TOPICS["tf_static"]:
            session.transforms(m.decode(), static=True)
        elif m.topic == bags.TOPICS["camera_info"]:
            assert session.camera_info(m.decode(), now=now)
        else:
            assert session.receive(ROLE_OF[m.topic], m.decode(), now=now, ros_now=now)
        if not session.camera_info_seen:
            continue
        frame, _ = session.poll(now)
        if frame is not None:
            result = session.segment(frame)
            if result is not None:
                return result
    raise AssertionError("the bag gave no frame")


@pytest.mark.parametrize("resolution", ["network", "camera"])
def test_the_label_camera_info_is_the_label_image_s_calibration(drive, checkpoint,
                                                                 resolution):
    camera_K, camera_hw = _camera_K(drive)
    assert camera_hw == CAMERA_HW
    session = S.Session(_values(drive, checkpoint, resolution), logger=_Quiet(), warmup=False)
    result = _first_result(session, drive)
    label_hw = NET_HW if resolution == "network" else CAMERA_HW
    assert tuple(result.labels.shape[:2]) == label_hw
    info = session.output_camera_info(result)
    assert tuple(info["size_hw"]) == label_hw
    expected = _scaled(camera_K, camera_hw, label_hw)
    np.testing.assert_allclose(info["K"], expected, rtol=1e-9, atol=1e-9)
    if resolution == "camera":
        np.testing.assert_allclose(info["K"], camera_K, rtol=1e-9, atol=1e-9)
    # and the message built from it, as the node and process_bag build it
    msg = conv.camera_info_msg(info["K"], info["size_hw"], result.header_stamp,
                               result.frame_id, D=info["D"],
                               distortion_model=info["distortion_model"],
                               cls=bags.msg_class("sensor_msgs/msg/CameraInfo"))
    assert (msg.height, msg.width) == label_hw
    np.testing.assert_allclose(np.asarray(msg.k).reshape(3, 3), expected, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(msg.p).reshape(3, 4)[:, :3], expected, rtol=1e-9)


def test_process_bag_writes_a_camera_info_matching_each_label_image(drive, checkpoint,
                                                                    tmp_path):
    camera_K, camera_hw = _camera_K(drive)
    out = tmp_path / "out"
    summary = process_bag(drive, out, checkpoint, _values(drive, checkpoint, "network"),
                          progress=False)
    assert summary["frames_out"] > 0
    labels = {(m.header.stamp.sec, m.header.stamp.nanosec): m
              for m in (r.decode() for r in bags.read_bag(out, ["/anyseg/labels"]))}
    infos = [r.decode() for r in bags.read_bag(out, ["/anyseg/camera_info"])]
    # every label image but those made before the first CameraInfo came has one
    assert len(labels) == summary["frames_out"]
    assert infos and len(labels) - 1 <= len(infos) <= len(labels)
    expected = _scaled(camera_K, camera_hw, NET_HW)
    for info in infos:
        image = labels[(info.header.stamp.sec, info.header.stamp.nanosec)]
        assert (info.height, info.width) == (image.height, image.width) == NET_HW
        assert info.header.frame_id == image.header.frame_id
        np.testing.assert_allclose(np.asarray(info.k).reshape(3, 3), expected, rtol=1e-9)
