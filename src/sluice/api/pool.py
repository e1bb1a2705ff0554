"""A bounded pool of worker threads for queries: 429 when full, so the rest keeps capacity.

Queries run in their own threads, at most ``size`` at once, apart from the default thread
pool that ingest and predict use. A slot is held until the query's thread really ends,
even when the request gave up waiting for it (a timed-out query keeps its slot until
DuckDB stops it), so slow queries can never pile up beyond the bound.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from anyio import CapacityLimiter, fail_after, to_thread

from sluice.api.errors import ApiError

T = TypeVar("T")


class _Slot:
    """One claimed slot: released once, by the worker thread or by a request that never ran it."""

    def __init__(self, pool: QueryPool) -> None:
        self.pool = pool
        self.started = False
        self.released = False

    def start(self) -> bool:
        """Mark the work as started; False when the request already gave the slot back."""
        with self.pool.lock:
            if self.released:
                return False
            self.started = True
            return True

    def release(self, only_if_idle: bool = False) -> None:
        """Give the slot back (``only_if_idle``: only when the work never started)."""
        with self.pool.lock:
            if self.released or (only_if_idle and self.started):
                return
            self.released = True
            self.pool.busy -= 1


class QueryPool:
    """At most ``size`` queries at once, each in a worker thread with a timeout."""

    def __init__(self, size: int, retry_after: int = 1) -> None:
        self.size = max(1, size)
        self.retry_after = retry_after
        self.busy = 0
        self.lock = threading.Lock()
        self._limiter: CapacityLimiter | None = None

    def _claim(self) -> _Slot:
        with self.lock:
            if self.busy >= self.size:
                raise ApiError(
                    429,
                    f"{self.busy} queries are running, the limit of this server "
                    f"(SLUICE_API_QUERY_CONCURRENCY={self.size}); retry shortly",
                    {"running": self.busy, "limit": self.size},
                    headers={"Retry-After": str(self.retry_after)},
                )
            self.busy += 1
        return _Slot(self)

    async def run(self, work: Callable[[], T], timeout: float) -> T:
        """Run ``work`` in a pool thread; 429 when the pool is full, 504 after ``timeout``."""
        slot = self._claim()
        if self._limiter is None:
            self._limiter = CapacityLimiter(self.size)

        def guarded() -> T:
            if not slot.start():
                raise TimeoutError
            try:
                return work()
            finally:
                slot.release()

        try:
            with fail_after(timeout):
                return await to_thread.run_sync(
                    guarded, abandon_on_cancel=True, limiter=self._limiter
                )
        except TimeoutError:
            raise ApiError(
                504, f"the query took longer than {timeout:g} s", {"timeout_seconds": timeout}
            ) from None
        finally:
            slot.release(only_if_idle=True)
