"""Allocator settings: numpy temporaries kept on the C heap, Arrow's freed pages returned;
and numpy's BLAS kept to one thread.

``reuse_freed_memory`` (glibc only) keeps large numpy temporaries on the C heap instead of
fresh memory mappings.

glibc's ``malloc`` serves blocks above a threshold (128 kB to start with) from their own memory
mappings, unmapped again when freed, and returns free memory at the top of its heap to the
operating system. Vectorised code that allocates and frees arrays of a few hundred kB per step
then pays page faults (the kernel clearing each page) for every temporary, which can cost a
tenth of its time. Raising both thresholds keeps such blocks on the heap for reuse; glibc raises
them by itself after freeing a large mapped block, so without this the speed depends on
allocation history. Other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import os
import sys
from functools import cache

M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's own upper bound for its dynamic threshold
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # what glibc pairs with it


@cache
def reuse_freed_memory() -> bool:
    """Raise glibc's mapping and trim thresholds once per process; whether it was done."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False  # a C library without mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def return_arrow_pages_promptly() -> None:
    """Make Arrow's allocator (mimalloc) give freed pages back to the system at once.

    mimalloc purges a freed page only when the thread that freed it allocates again, so a
    service whose reader or decoder thread goes idle after a large epoch keeps that epoch's
    memory. Only takes effect before pyarrow is first imported; a value the user set wins.
    """
    os.environ.setdefault("MIMALLOC_PURGE_DELAY", "0")


def one_blas_thread() -> None:
    """Keep numpy's OpenBLAS to one thread unless the user set ``OPENBLAS_NUM_THREADS``.

    A pipeline runs its stages on threads of its own. OpenBLAS's threads, idle between the
    models' small matrix products, spin waiting for work and take CPU from those stages (about
    0.2 s of a 100k-event model pipeline on two cores; under callgrind, a third of all
    instructions). Only takes effect before numpy is first imported.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
