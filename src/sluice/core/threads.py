"""Thread priorities: background work yields the CPU to the pipeline's critical path.

A pipeline's main thread decodes, transforms and scores; action rules and deliveries run
beside it and have slack (an epoch's rules are only needed at its commit, one epoch later;
deliveries are asynchronous). On a machine with fewer cores than busy threads the
scheduler shares the CPU equally unless told otherwise, and the main thread then waits
for work that could have waited instead.
"""

from __future__ import annotations

import os
import sys
import threading

BACKGROUND_NICE = 10  # Linux: about a tenth of a normal thread's CPU share when contended


def background_priority() -> bool:
    """Lower the calling thread's CPU priority (Linux: nice +10, this thread only); whether
    it was done. Elsewhere the priority is per process, so it is left alone."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        thread = threading.get_native_id()
        nice = os.getpriority(os.PRIO_PROCESS, thread) + BACKGROUND_NICE
        os.setpriority(os.PRIO_PROCESS, thread, nice)
    except OSError:  # e.g. a seccomp profile that forbids it
        return False
    return True
