"""Publish std_msgs/String and a 640x480 rgb8 sensor_msgs/Image at 10 Hz (reliable QoS).

Started by test_rclpy_smoke.py in its own process:
    python talker.py /some/prefix   ->   /some/prefix/chatter, /some/prefix/image
Message n carries 'hello n' and expected_image(n), so the receiver can check the content.
Exits with code 0 on SIGINT.
"""
import array
import sys

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String

from ros_process import spin_until_sigint  # beside this script

HEIGHT, WIDTH = 480, 640
_BASE = (np.arange(HEIGHT)[:, None, None] * 3 + np.arange(WIDTH)[None, :, None]
         + np.array([0, 85, 170])[None, None, :])


def expected_image(n):
    """Image number n: a gradient shifted by n, so pixel (0, 0, 0) equals n % 256."""
    return ((_BASE + n) % 256).astype(np.uint8)


class Talker(Node):
    def __init__(self, prefix):
        super().__init__('anyseg_test_talker')
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._strings = self.create_publisher(String, f'{prefix}/chatter', qos)
        self._images = self.create_publisher(Image, f'{prefix}/image', qos)
        self._count = 0
        self.create_timer(0.1, self._publish)

    def _publish(self):
        n = self._count
        self._count += 1
        self._strings.publish(String(data=f'hello {n}'))
        image = Image(height=HEIGHT, width=WIDTH, encoding='rgb8', is_bigendian=0,
                      step=WIDTH * 3)
        # A source, as a camera driver is: it stamps its own capture time (no input to copy).
        image.header.stamp = self.get_clock().now().to_msg()
        image.header.frame_id = 'camera'
        # array.array is taken as is; a bytes object would be checked element by element.
        image.data = array.array('B', expected_image(n).tobytes())
        self._images.publish(image)


def main():
    spin_until_sigint(lambda: Talker(sys.argv[1]))


if __name__ == '__main__':
    main()
