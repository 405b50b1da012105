"""The main loop of the test's helper ROS processes (talker.py, tf_broadcaster.py): spin one
node until SIGINT, and exit 0 on that stop only."""
import rclpy
from rclpy.executors import ExternalShutdownException


def spin_until_sigint(make_node) -> None:
    """Init rclpy, spin ``make_node()`` until SIGINT, shut down. A stop by SIGINT returns
    normally; any other error propagates (the process then exits non-zero)."""
    rclpy.init()
    try:
        rclpy.spin(make_node())
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # SIGINT: rclpy's handler shuts the context down and spin returns or raises
    except RuntimeError:
        # The context was shut down while a timer callback was publishing (RCLError, a
        # RuntimeError): also a stop by SIGINT. Anything else is a failure.
        if rclpy.ok():
            raise
    finally:
        rclpy.try_shutdown()
