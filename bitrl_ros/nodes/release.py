"""Actions released a fixed delay after their observation: policy_value's `action_release_ms` (issue 14 item 2).

Published as soon as it is computed, an action inherits the pipeline's jitter: serializer, encoder and heads take
a varying time (cache hits, the update process on the other core), so consecutive actions arrive 25 ms +- a few
ms apart (bench/README.md "The 40 Hz loop"). Released at observation stamp + delay instead, the action period
jitters only as much as one sleeping thread wakes late, and the observation->action latency is the delay: a
fixed delay a controller can account for, in exchange for a longer one. An action whose release time has already
passed when it is computed goes at once and is counted late; a delay above the pipeline's worst latency keeps
that rare. The stamps must be in this machine's wall clock (the bridge's realtime stamps, or a synchronized
clock); a stamp from the future (clocks that disagree) waits no longer than the delay.

The release thread must get the interpreter when its time comes: after its first release it takes the process's
garbage collector over (nodes/timing.py) and collects what is due right after each release, when the next one is a
period away, or every half second when no action comes; close() gives the collector back.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Callable

from bitrl_ros.nodes.timing import collect_due, give_back_collector, take_collector

IDLE_COLLECT_S = 0.5


class ActionRelease:
    def __init__(self, delay_s: float, publish: Callable[[object], None], clock: Callable[[], float] = time.time):
        if delay_s <= 0:
            raise ValueError(f"delay_s must be > 0, got {delay_s}")
        self.delay_s = float(delay_s)
        self._publish = publish
        self._clock = clock
        self._queue: queue.Queue = queue.Queue()
        self.released = 0  # actions published
        self.late = 0      # of which their release time had passed when they were taken up
        self._took_gc = False
        self._thread = threading.Thread(target=self._loop, name="action-release", daemon=True)
        self._thread.start()

    def submit(self, stamp_s: float, msg) -> None:
        """Publish msg at stamp_s + delay (wall-clock seconds), in submission order."""
        self._queue.put((stamp_s + self.delay_s, msg))

    def close(self, timeout: float = 1.0) -> None:
        """Publish what is queued (each at its time), then stop and give the process its collector back."""
        self._queue.put(None)
        self._thread.join(timeout)
        if self._took_gc:
            self._took_gc = False
            give_back_collector()

    def _loop(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=IDLE_COLLECT_S)
            except queue.Empty:
                if self._took_gc:
                    collect_due()
                continue
            if item is None:
                return
            due, msg = item
            wait = min(due - self._clock(), self.delay_s)
            if wait > 0:
                time.sleep(wait)
            else:
                self.late += 1
            self._publish(msg)
            self.released += 1
            if self._took_gc:
                collect_due()
            else:  # after the first action: everything the node needs has been built by now
                take_collector()
                self._took_gc = True
