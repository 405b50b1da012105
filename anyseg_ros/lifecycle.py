"""The managed node: anyseg_node as a ROS 2 lifecycle node (``anyseg_node --managed``, or
``managed:=true`` in the launch file), for robot stacks that bring their nodes up and down
with lifecycle transitions (Nav2's lifecycle manager, ``ros2 lifecycle set``).

The same work as :class:`~anyseg_ros.node.AnysegNode` (:class:`~anyseg_ros.node.AnysegNodeLogic`),
step by step:

========== ======================================================================
transition what happens
========== ======================================================================
configure  the parameters are read and the model is loaded and warmed up (a bad
           parameter or checkpoint fails the transition, with its reason logged)
activate   inputs subscribed, outputs, /diagnostics and the inference worker started
deactivate worker stopped, every subscription, publisher and timer removed: nothing
           is received or published while inactive
cleanup    the model and its memory released (configure loads it again)
shutdown   all of the above that applies
========== ======================================================================

Parameters can be set in any state; the read-only ones take effect at the next configure.
"""
from __future__ import annotations

from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn

from anyseg_core.checkpoint import CheckpointError

from .node import NODE_NAME, AnysegNodeLogic
from .params import ConfigError

#: What a transition catches and reports as its failure (anything else is an error).
_EXPECTED = (ConfigError, CheckpointError, ValueError, FileNotFoundError)


class AnysegLifecycleNode(AnysegNodeLogic, LifecycleNode):
    """anyseg_node, managed: created unconfigured, see the module's table."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._setup()

    def _step(self, name: str, action) -> TransitionCallbackReturn:
        try:
            action()
        except _EXPECTED as e:
            self.get_logger().error(f"{name} failed: {e}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"{name}d")
        return TransitionCallbackReturn.SUCCESS

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        return self._step("configure", self._load)

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        result = self._step("activate", self._open)
        if result == TransitionCallbackReturn.SUCCESS:
            return super().on_activate(state)
        self._shut()  # leave nothing half open
        return result

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._shut()
        self.get_logger().info("deactivated: no subscription, publisher or worker")
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._unload()
        self.get_logger().info("cleaned up: the model is released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._shut()
        self._unload()
        return TransitionCallbackReturn.SUCCESS
