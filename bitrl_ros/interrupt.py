"""SIGINT and SIGTERM as one KeyboardInterrupt: the first raises it, later ones are ignored, so the clean-up it
starts (flushing checkpoints and bags, printing a summary) is never cut short. A terminal's Ctrl-C reaches
`ros2 launch` and its nodes alike, and launch then forwards its own SIGINT: every node gets two.
"""
import signal
import threading


def _interrupt(signum, frame):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def interrupt_once_on_signals() -> None:
    """Install the handlers (main thread only, as for any Python signal handler)."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def stop_on_signals() -> threading.Event:
    """The same once-only handling as a flag instead of an exception, for a process whose main thread runs ROS
    callbacks (spin_nodes): rclpy's EventsExecutor logs an exception raised inside a callback as a FATAL with its
    traceback, so the spin loop checks the returned event between spins instead.
    """
    stop = threading.Event()

    def _stop(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    return stop
