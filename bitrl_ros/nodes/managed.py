"""Managed (lifecycle) nodes for the heavy resources, as ROS 2 engineers expect them (nav2 and llama_ros do the
same): ternary_encoder (the backbone) and policy_value (the heads, the learner, the checkpoint).

    unconfigured --configure--> inactive --activate--> active
    unconfigured <--cleanup---- inactive <-deactivate- active          shutdown from any of them: finalized

What each transition does is the subclass's configure() / activate() / deactivate() / cleanup(); one that raises
a BitrlError fails the transition: the node stays where it was, the error is logged and kept in
`transition_error`. With the `autostart` parameter (the default, for `ros2 run`) the node configures and activates
itself at start-up; the launch files and `bitrl run` set it false and drive the transitions themselves, the
launch files through the standard `<node>/change_state` service.
"""
from __future__ import annotations

from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

from bitrl_ros.errors import BitrlError

# Which transitions each primary state accepts (the ROS 2 managed-node state machine).
ALLOWED = {"unconfigured": ("configure", "shutdown"), "inactive": ("activate", "cleanup", "shutdown"),
           "active": ("deactivate", "shutdown"), "finalized": ()}


class LifecycleError(BitrlError):
    """A transition out of order, or one that failed."""


class ManagedNode(LifecycleNode):
    def __init__(self, node_name: str, **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        self.lifecycle_state = "unconfigured"
        self.transition_error: BitrlError | None = None

    @property
    def active(self) -> bool:
        return self.lifecycle_state == "active"

    def start(self, autostart: bool) -> None:
        """End of __init__: configure and activate now (autostart), or wait for a lifecycle manager."""
        if autostart:
            self.change("configure")
            self.change("activate")
        else:
            self.get_logger().info("unconfigured: waiting for configure (autostart is false)")

    def change(self, transition: str) -> None:
        """Drive one transition from this process; raises LifecycleError for one the current state does not
        accept, and the transition's own error when it fails.
        """
        if transition not in ALLOWED[self.lifecycle_state]:
            allowed = ", ".join(ALLOWED[self.lifecycle_state]) or "none"
            raise LifecycleError(f"{self.get_name()}: cannot {transition} while {self.lifecycle_state} "
                                 f"(allowed: {allowed})")
        if getattr(self, f"trigger_{transition}")() != TransitionCallbackReturn.SUCCESS:
            raise self.transition_error or LifecycleError(f"{self.get_name()}: {transition} failed")

    # Subclasses override these four (and may extend shutdown()).
    def configure(self) -> None:
        pass

    def activate(self) -> None:
        pass

    def deactivate(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def _transition(self, name: str, step, reached: str) -> TransitionCallbackReturn:
        try:
            step()
        except BitrlError as exc:
            self.transition_error = exc
            self.get_logger().error(f"{name} failed, still {self.lifecycle_state}: {exc}")
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # a bug, not a refusal: rclpy would swallow it silently
            self.transition_error = LifecycleError(f"{self.get_name()}: {name} raised {exc!r}")
            self.get_logger().error(str(self.transition_error))
            return TransitionCallbackReturn.ERROR
        self.transition_error = None
        self.lifecycle_state = reached
        self.get_logger().info(f"{name}: {reached}")
        return TransitionCallbackReturn.SUCCESS

    def on_configure(self, state) -> TransitionCallbackReturn:
        return self._transition("configure", self.configure, "inactive")

    def on_activate(self, state) -> TransitionCallbackReturn:
        return self._transition("activate", self.activate, "active")

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        return self._transition("deactivate", self.deactivate, "inactive")

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        return self._transition("cleanup", self.cleanup, "unconfigured")

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        return self._transition("shutdown", self.shutdown, "finalized")

    def on_error(self, state) -> TransitionCallbackReturn:
        # An unexpected exception inside a transition: rclpy goes back to unconfigured.
        self.get_logger().error(f"a transition from {self.lifecycle_state} raised; back to unconfigured")
        self.lifecycle_state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS
