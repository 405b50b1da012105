"""Publish a rig's transforms the way tf2_ros's broadcasters do (started by test_tf2_msgs.py).

    python tf_broadcaster.py

- /tf_static: one TFMessage holding STATIC, published once at start with the QoS of tf2_ros's
  StaticTransformBroadcaster (reliable, transient local, keep last 1), before any
  subscriber can have matched; then the line STATIC_DONE on stdout.
- /tf: odom -> base_link at 20 Hz (reliable, volatile, keep last 100, as tf2_ros's
  TransformBroadcaster), message n with x = DYNAMIC_STEP_M * n and stamp n * 50 ms after
  DYNAMIC_T0.
Exits with code 0 on SIGINT.
"""
from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from tf2_msgs.msg import TFMessage

from ros_process import spin_until_sigint  # beside this script

STAMP = (1_700_000_000, 250_000_000)
# (parent, child, translation xyz, rotation xyzw): base_link -> velodyne a yaw of 90 degrees,
# base_link -> camera_link pitched down by 10 degrees (+y; its quaternion twice the unit one
# on purpose: receivers normalise), camera_link -> camera_optical the optical convention.
STATIC = (
    ('base_link', 'velodyne', (1.2, 0.0, 1.9),
     (0.0, 0.0, 0.7071067811865476, 0.7071067811865476)),
    ('base_link', 'camera_link', (1.5, 0.1, 1.4),
     (0.0, 0.17431148549531633, 0.0, 1.9923893961834911)),
    ('camera_link', 'camera_optical', (0.0, 0.0, 0.0), (-0.5, 0.5, -0.5, 0.5)),
)
DYNAMIC_T0 = (1_700_000_100, 0)
DYNAMIC_STEP_M = 0.1
STATIC_DONE = 'static published'

STATIC_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                        reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)
DYNAMIC_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)


def transform(parent, child, stamp, xyz, xyzw):
    t = TransformStamped()
    t.header.frame_id = parent
    t.header.stamp.sec, t.header.stamp.nanosec = stamp
    t.child_frame_id = child
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = xyz
    (t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z,
     t.transform.rotation.w) = xyzw
    return t


class Broadcaster(Node):
    def __init__(self):
        super().__init__('anyseg_test_tf_broadcaster')
        self._static = self.create_publisher(TFMessage, '/tf_static', STATIC_QOS)
        self._dynamic = self.create_publisher(TFMessage, '/tf', DYNAMIC_QOS)
        self._static.publish(TFMessage(transforms=[
            transform(parent, child, STAMP, xyz, xyzw) for parent, child, xyz, xyzw in STATIC]))
        print(STATIC_DONE, flush=True)
        self._count = 0
        self.create_timer(0.05, self._publish_dynamic)

    def _publish_dynamic(self):
        n = self._count
        self._count += 1
        sec, nanosec = DYNAMIC_T0
        nanosec += 50_000_000 * n
        stamp = (sec + nanosec // 1_000_000_000, nanosec % 1_000_000_000)
        self._dynamic.publish(TFMessage(transforms=[
            transform('odom', 'base_link', stamp, (DYNAMIC_STEP_M * n, 0.0, 0.0),
                      (0.0, 0.0, 0.0, 1.0))]))


def main():
    spin_until_sigint(lambda: Broadcaster())


if __name__ == '__main__':
    main()
