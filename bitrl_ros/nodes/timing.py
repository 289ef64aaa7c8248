"""The interpreter out of a fixed-rate loop's way: the garbage collector runs where the loop has slack.

Two things in a Python process hold the interpreter longer than a 40 Hz period's slack: another thread running
Python (it hands over only at the switch interval, 5 ms by default) and the automatic garbage collector (a full
collection of a process with torch takes 80-140 ms, the younger generations 1-2 ms; measured under `bitrl run`).
A loop that must act on time takes the collector over (take_collector): the objects alive then are frozen (never
scanned again), automatic collection is off, the switch interval is 0.5 ms, and the loop calls collect_due() where
it has slack (right after it has acted), which runs the collection the interpreter would have run by then. Takers
are counted: the process gets its collector back when the last one gives it back. Used by policy_value's action
release (nodes/release.py). The bridge's realtime timer taking it too was measured and made no difference (bench/
README.md "The 40 Hz loop"), so it does not.
"""
from __future__ import annotations

import gc
import sys
import threading

SWITCH_INTERVAL_S = 0.0005

_lock = threading.Lock()
_takers = 0
_saved: tuple[float, bool] | None = None  # (switch interval, gc enabled) before the first taker


def take_collector() -> None:
    global _takers, _saved
    with _lock:
        _takers += 1
        if _takers > 1:
            return
        _saved = (sys.getswitchinterval(), gc.isenabled())
        # No full collection first: it would stall the loop for ~100 ms; what garbage is alive now stays.
        gc.freeze()
        gc.disable()
        sys.setswitchinterval(SWITCH_INTERVAL_S)


def give_back_collector() -> None:
    global _takers, _saved
    with _lock:
        if _takers == 0:
            return
        _takers -= 1
        if _takers or _saved is None:
            return
        switch, enabled = _saved
        _saved = None
        sys.setswitchinterval(switch)
        gc.unfreeze()
        if enabled:
            gc.enable()


def collector_taken() -> bool:
    return _takers > 0


def collect_due() -> None:
    """Run the collection the interpreter would have run by now (its thresholds), if any."""
    counts, thresholds = gc.get_count(), gc.get_threshold()
    if counts[0] <= thresholds[0]:
        return
    gc.collect(max(g for g in range(3) if counts[g] > thresholds[g]))
