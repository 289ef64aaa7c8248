"""Keep a long-running process's heap from growing with its thread count.

glibc gives each thread that allocates concurrently an arena of its own, up to 8 per core, and memory freed in one
arena is not reused by the others. A node lives with DDS receive threads, executor threads and PPO update threads,
so its RSS climbs for many minutes as new arenas fill (the hour's soak in bench/README.md: +52 MB from minute 5
to 14 with the default, flat with 2 arenas). Two arenas keep that bounded at no measured cost in rate.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc malloc.h


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process (call before threads start); True if applied. The user's own
    MALLOC_ARENA_MAX, which glibc reads at start-up, wins. Other C libraries: nothing to do, False.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, int(arenas)))
