"""ActionRelease (nodes/release.py): each action at its stamp + delay, in order; late ones at once, counted."""
import threading
import time

import pytest

from bitrl_ros.nodes.release import ActionRelease


def test_actions_are_released_at_stamp_plus_delay_in_order():
    published, lock = [], threading.Lock()

    def publish(msg):
        with lock:
            published.append((time.time(), msg))

    release = ActionRelease(0.05, publish)
    stamps = [time.time() + 0.01 * i for i in range(5)]
    for i, stamp in enumerate(stamps):
        release.submit(stamp, i)
    release.submit(time.time() - 10.0, "late")  # long past: at once, after those queued before it
    release.close(timeout=5.0)
    assert [m for _, m in published] == [0, 1, 2, 3, 4, "late"]
    for (at, _), stamp in zip(published, stamps):
        assert at >= stamp + 0.05
    assert release.released == 6 and release.late == 1


def test_a_stamp_from_the_future_waits_no_longer_than_the_delay():
    published = []
    release = ActionRelease(0.02, published.append, clock=lambda: 0.0)  # this clock says the stamp is 1 h ahead
    t0 = time.monotonic()
    release.submit(3600.0, "a")
    release.close(timeout=5.0)
    assert published == ["a"] and time.monotonic() - t0 < 5.0 and release.late == 0


def test_the_delay_must_be_positive():
    with pytest.raises(ValueError, match="delay_s"):
        ActionRelease(0.0, print)
