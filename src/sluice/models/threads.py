"""Intra-op threads for file-model inference, without oversubscribing the cores.

Each model's ``threads:`` option (default: the cores available to the process) sets how many
threads one inference call may use. Calls run one at a time per process (a pipeline's models,
partition tasks and the predict API share the lock), so the busy threads never exceed the
largest setting; between calls the frameworks' pools sleep rather than spin.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sluice.core.errors import ConfigError

_INFERENCE = threading.Lock()


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_option(name: str, options: dict[str, Any]) -> int:
    """The ``threads`` option: a positive integer, by default the available cores."""
    value = options.get("threads")
    if value is None:
        return available_cores()
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"model {name!r}: threads must be a positive integer", key="threads")
    return value


@contextmanager
def inference_slot(threads: int, torch: Any = None) -> Iterator[None]:
    """Hold the process's inference lock; set torch's (global) intra-op pool to ``threads``."""
    with _INFERENCE:
        if torch is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        yield
