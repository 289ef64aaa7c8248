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
    release.submit(time.time() - 1.0, "first")  # the first release also takes the collector over
    while release.released < 1:
        time.sleep(0.01)
    published.clear()
    stamps = [time.time() + 0.01 * i for i in range(5)]
    for i, stamp in enumerate(stamps):
        release.submit(stamp, i)
    release.submit(time.time() - 10.0, "late")  # long past: at once, after those queued before it
    release.close(timeout=5.0)
    assert [m for _, m in published] == [0, 1, 2, 3, 4, "late"]
    for (at, _), stamp in zip(published, stamps):
        assert at >= stamp + 0.05
    assert release.released == 7 and release.late == 2


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


def test_while_releasing_the_collector_runs_only_after_releases_and_comes_back_on_close():
    import gc
    import sys

    switch, enabled = sys.getswitchinterval(), gc.isenabled()
    release = ActionRelease(0.001, lambda msg: None)
    release.submit(time.time(), "a")
    deadline = time.monotonic() + 5.0
    while gc.isenabled() and time.monotonic() < deadline:  # taken over after the first release
        time.sleep(0.01)
    assert release.released == 1
    assert not gc.isenabled() and gc.get_freeze_count() > 0 and sys.getswitchinterval() < switch
    garbage = []
    for _ in range(5000):  # reference cycles, past gen0's threshold
        cycle = []
        cycle.append(cycle)
        garbage.append(len(cycle))
    del cycle
    before = gc.get_count()[0]
    release.submit(time.time(), "b")
    deadline = time.monotonic() + 5.0
    while release.released < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert before > gc.get_threshold()[0] and gc.get_count()[0] < before  # collected after the release
    release.close()
    assert gc.isenabled() == enabled and gc.get_freeze_count() == 0 and sys.getswitchinterval() == switch


def test_the_collector_comes_back_when_the_last_taker_gives_it_back():
    import gc
    import sys

    from bitrl_ros.nodes.timing import collector_taken, give_back_collector, take_collector

    switch, enabled = sys.getswitchinterval(), gc.isenabled()
    take_collector()
    take_collector()  # two takers in one process
    give_back_collector()
    assert collector_taken() and not gc.isenabled()
    give_back_collector()
    assert not collector_taken() and gc.isenabled() == enabled and sys.getswitchinterval() == switch
    give_back_collector()  # one too many: nothing happens
    assert gc.isenabled() == enabled
