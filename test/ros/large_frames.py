"""Full-size sensor frames across processes, for test_large_frames.py.

    python large_frames.py publish PREFIX        # a driver rig, until SIGINT
    python large_frames.py listen PREFIX --want 3  # a consumer, until it has what it wants

``publish`` sends, at 10 Hz and best effort as sensor drivers are subscribed (SensorDataQoS),
the three sensors of one instant together: PREFIX/camera/image (1920x1080 rgb8, 6.2 MB),
PREFIX/lidar/points (PointCloud2 x, y, z, intensity float32 of a 64-beam, 1024-column sweep,
1 MiB) and PREFIX/events (PointCloud2 x, y uint16, t float64, p uint8, 50,000 events of a
100 ms packet, 650 kB): about 7.9 MB published at the same instant by one process.
Instant n is stamped n * 0.1 s and its payload is a function of n (:func:`expected`).

``listen`` subscribes to the three topics best effort (depth 5) and prints one JSON line per
message received: the topic, n, and whether the message is complete and equal to what was
published (``ok``; ``why`` otherwise). It exits 0 once it received ``--want`` intact messages of
each topic and every topic of at least one instant; it never judges by elapsed time (the test
sets the deadline).
"""
from __future__ import annotations

import argparse
import array
import json
import sys

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2, PointField

HEIGHT, WIDTH = 1080, 1920
LIDAR_POINTS = 64 * 1024
EVENTS = 50_000
PERIOD_S = 0.1  # 10 Hz
TOPICS = ('camera/image', 'lidar/points', 'events')
# The QoS drivers are read with (rclpy.qos.qos_profile_sensor_data): best effort, depth 5.
SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                        reliability=ReliabilityPolicy.BEST_EFFORT,
                        durability=DurabilityPolicy.VOLATILE)
LIDAR_FIELDS = [('x', 0, PointField.FLOAT32), ('y', 4, PointField.FLOAT32),
                ('z', 8, PointField.FLOAT32), ('intensity', 12, PointField.FLOAT32)]
LIDAR_STEP = 16
EVENT_FIELDS = [('x', 0, PointField.UINT16), ('y', 2, PointField.UINT16),
                ('t', 4, PointField.FLOAT64), ('p', 12, PointField.UINT8)]
EVENT_STEP = 13
EVENT_DTYPE = np.dtype({'names': ['x', 'y', 't', 'p'], 'formats': ['<u2', '<u2', '<f8', 'u1'],
                        'offsets': [0, 2, 4, 12], 'itemsize': EVENT_STEP})

_IMAGE_BASE = ((np.arange(HEIGHT)[:, None, None] * 3 + np.arange(WIDTH)[None, :, None]
                + np.array([0, 85, 170])[None, None, :]) % 256).astype(np.uint8)
_rng = np.random.default_rng(7)
_LIDAR_BASE = np.column_stack([_rng.uniform(-80, 80, (LIDAR_POINTS, 3)),
                               np.zeros(LIDAR_POINTS)]).astype('<f4')
_EVENT_XY = np.column_stack([_rng.integers(0, 640, EVENTS), _rng.integers(0, 480, EVENTS)])
_EVENT_P = _rng.integers(0, 2, EVENTS).astype(np.uint8)
_EVENT_DT = np.linspace(0.0, PERIOD_S, EVENTS, endpoint=False)


def expected(topic: str, n: int) -> np.ndarray:
    """The payload (``data``, as uint8) of ``topic`` at instant ``n``."""
    if topic == 'camera/image':
        return (_IMAGE_BASE + np.uint8(n % 256)).reshape(-1)  # wraps around in uint8
    if topic == 'lidar/points':
        cloud = _LIDAR_BASE.copy()
        cloud[:, 3] = n  # intensity carries the instant
        return cloud.view(np.uint8).reshape(-1)
    events = np.zeros(EVENTS, dtype=EVENT_DTYPE)
    events['x'], events['y'] = _EVENT_XY[:, 0], _EVENT_XY[:, 1]
    events['t'] = n * PERIOD_S + _EVENT_DT
    events['p'] = _EVENT_P
    return events.view(np.uint8).reshape(-1)


def stamp(n: int) -> Time:
    ns = n * int(PERIOD_S * 1e9)
    return Time(sec=ns // 10**9, nanosec=ns % 10**9)


def instant(msg) -> int:
    return round((msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9) / PERIOD_S)


def _cloud(fields, step, count, data, n, frame_id) -> PointCloud2:
    msg = PointCloud2(height=1, width=count, is_bigendian=False, point_step=step,
                      row_step=step * count, is_dense=True,
                      fields=[PointField(name=name, offset=offset, datatype=datatype, count=1)
                              for name, offset, datatype in fields])
    msg.header.stamp, msg.header.frame_id = stamp(n), frame_id
    msg.data = array.array('B', data.tobytes())  # taken as is; bytes are checked one by one
    return msg


def message(topic: str, n: int):
    data = expected(topic, n)
    if topic == 'camera/image':
        msg = Image(height=HEIGHT, width=WIDTH, encoding='rgb8', is_bigendian=0, step=WIDTH * 3)
        msg.header.stamp, msg.header.frame_id = stamp(n), 'camera_optical'
        msg.data = array.array('B', data.tobytes())
        return msg
    if topic == 'lidar/points':
        return _cloud(LIDAR_FIELDS, LIDAR_STEP, LIDAR_POINTS, data, n, 'lidar')
    return _cloud(EVENT_FIELDS, EVENT_STEP, EVENTS, data, n, 'event_camera_optical')


def check(topic: str, msg) -> str:
    """'' when ``msg`` is complete and equal to what was published, else what is wrong."""
    n = instant(msg)
    if topic == 'camera/image':
        shape = (msg.height, msg.width, msg.encoding, msg.step)
        if shape != (HEIGHT, WIDTH, 'rgb8', WIDTH * 3):
            return f'geometry {shape}'
    else:
        fields, step, count = ((LIDAR_FIELDS, LIDAR_STEP, LIDAR_POINTS) if topic == 'lidar/points'
                               else (EVENT_FIELDS, EVENT_STEP, EVENTS))
        got = [(f.name, f.offset, f.datatype) for f in msg.fields]
        if got != fields or (msg.height, msg.width, msg.point_step, msg.row_step) != (
                1, count, step, step * count):
            return f'layout {got} {msg.height}x{msg.width} step {msg.point_step}'
    data = np.frombuffer(msg.data, dtype=np.uint8)
    want = expected(topic, n)
    if data.size != want.size:
        return f'{data.size} bytes, expected {want.size}'
    if not np.array_equal(data, want):
        return f'{int(np.count_nonzero(data != want))} bytes differ'
    return ''


class Rig(Node):
    def __init__(self, prefix: str) -> None:
        super().__init__('anyseg_test_large_frames_rig')
        self.pubs = {t: self.create_publisher(Image if t == 'camera/image' else PointCloud2,
                                              f'{prefix}/{t}', SENSOR_QOS) for t in TOPICS}
        self.n = 0
        self.create_timer(PERIOD_S, self.tick)

    def tick(self) -> None:
        messages = {t: message(t, self.n) for t in TOPICS}  # built first, sent together
        for topic, msg in messages.items():
            self.pubs[topic].publish(msg)
        self.n += 1


class Listener(Node):
    def __init__(self, prefix: str, want: int) -> None:
        super().__init__('anyseg_test_large_frames_listener')
        self.want = want
        self.intact = {t: 0 for t in TOPICS}
        self.instants: dict[int, set] = {}
        for t in TOPICS:
            self.create_subscription(Image if t == 'camera/image' else PointCloud2,
                                     f'{prefix}/{t}', lambda msg, t=t: self.received(t, msg),
                                     SENSOR_QOS)

    def received(self, topic: str, msg) -> None:
        why = check(topic, msg)
        n = instant(msg)
        print(json.dumps({'topic': topic, 'n': n, 'ok': not why, 'why': why}), flush=True)
        if not why:
            self.intact[topic] += 1
            self.instants.setdefault(n, set()).add(topic)

    def done(self) -> bool:
        return (min(self.intact.values()) >= self.want
                and any(len(topics) == len(TOPICS) for topics in self.instants.values()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('role', choices=['publish', 'listen'])
    ap.add_argument('prefix')
    ap.add_argument('--want', type=int, default=3)
    args = ap.parse_args(argv)
    rclpy.init()
    try:
        if args.role == 'publish':
            rclpy.spin(Rig(args.prefix))
        else:
            node = Listener(args.prefix, args.want)
            while rclpy.ok() and not node.done():
                rclpy.spin_once(node, timeout_sec=0.1)
            print(json.dumps({'done': True, 'intact': node.intact}), flush=True)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # SIGINT: rclpy's handler shuts the context down
    except RuntimeError:
        # SIGINT while the timer callback was publishing (RCLError): a stop, not a failure.
        if rclpy.ok():
            raise
    finally:
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
