"""Periodic retention of the embedded log, run by ``sluice serve`` on a daemon thread.

Policy: every ``SLUICE_LOG_RETENTION_CHECK`` (default ``1m``) each stream loses its records
older than ``SLUICE_LOG_RETENTION`` (default ``7d``) or beyond ``SLUICE_LOG_RETENTION_BYTES``
of payload (default: no size limit); ``none`` turns a limit off. Unlike Kafka, a record a
consumer has not processed yet is never deleted: a pipeline reading the stream (its
position is recorded after each checkpoint, even while it is stopped) holds it until it
has. A warning names the consumers holding records past the limits, and how many (at most
once an hour per stream): run that pipeline, or, if it is gone for good, release its hold
with ``sluice forget-consumer STREAM PIPELINE``. A stream without consumers is trimmed to
the limits unconditionally. Deleted records leave free pages in the stream's SQLite file
that later appends reuse: the file stops growing rather than shrinking.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from sluice.core.errors import ConfigError
from sluice.core.types import parse_duration
from sluice.storage.log import EmbeddedLog, Retention

log = logging.getLogger("sluice.log.retention")

DEFAULT_MAX_AGE = timedelta(days=7)
DEFAULT_CHECK_SECONDS = 60.0
WARN_EVERY_SECONDS = 3600.0
_OFF = {"none", "off", "0", ""}
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4}


def _is_off(value: str) -> bool:
    return value.strip().lower() in _OFF


def parse_size(text: str) -> int:
    """Parse ``1000``, ``500KB``, ``64MiB`` or ``2GB`` into bytes (KB = 1000, KiB = 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise ConfigError(f"invalid size {text!r}; write it like 500MB, 64MiB or 1000000")
    unit = (match.group(2) or "b").lower()
    if unit == "b":
        return int(match.group(1))
    base = 1024 if "i" in unit else 1000
    return int(match.group(1)) * base ** _SIZE_POWERS[unit[0]]


@dataclass(frozen=True)
class RetentionPolicy:
    """Per-stream limits of the embedded log and how often they are applied."""

    max_age: timedelta | None = DEFAULT_MAX_AGE
    max_bytes: int | None = None
    check_every: float = DEFAULT_CHECK_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RetentionPolicy:
        """Read ``SLUICE_LOG_RETENTION``, ``..._BYTES`` and ``..._CHECK`` (see the module)."""
        env = os.environ if env is None else env
        age = env.get("SLUICE_LOG_RETENTION")
        size = env.get("SLUICE_LOG_RETENTION_BYTES")
        check = env.get("SLUICE_LOG_RETENTION_CHECK")
        every = parse_duration(check.strip()).total_seconds() if check else DEFAULT_CHECK_SECONDS
        if every <= 0:
            raise ConfigError("SLUICE_LOG_RETENTION_CHECK must be a positive duration")
        max_age: timedelta | None = DEFAULT_MAX_AGE
        if age is not None:
            max_age = None if _is_off(age) else parse_duration(age.strip())
        max_bytes = None if size is None or _is_off(size) else parse_size(size)
        return cls(max_age=max_age, max_bytes=max_bytes, check_every=every)

    @property
    def enabled(self) -> bool:
        """False when neither limit is set (nothing to do)."""
        return self.max_age is not None or self.max_bytes is not None


class LogRetention:
    """Applies a :class:`RetentionPolicy` to every stream, now or every ``check_every``."""

    def __init__(
        self,
        log: EmbeddedLog,
        policy: RetentionPolicy,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log, self.policy, self.monotonic = log, policy, monotonic
        self._warned: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> dict[str, Retention]:
        """One pass over every stream; a stream that fails is logged and skipped."""
        done: dict[str, Retention] = {}
        for stream in self.log.streams():
            try:
                result = self.log.apply_retention(
                    stream, max_bytes=self.policy.max_bytes, max_age=self.policy.max_age
                )
            except Exception as exc:  # a broken stream must not stop retention of the others
                log.error("log retention of stream %r failed: %s", stream, exc)
                continue
            done[stream] = result
            if result.deleted:
                log.info("log retention: deleted %d records of stream %r", result.deleted, stream)
            if result.held:
                self._warn(stream, result)
        return done

    def _warn(self, stream: str, result: Retention) -> None:
        last = self._warned.get(stream)
        now = self.monotonic()
        if last is not None and now - last < WARN_EVERY_SECONDS:
            return
        self._warned[stream] = now
        holders = ", ".join(f"{name!r} (at offset {at})" for name, at in result.holders.items())
        log.warning(
            "log retention: stream %r keeps %d records past its retention limits because "
            "consumer(s) %s have not processed them yet (run the pipeline, or `sluice "
            "forget-consumer %s NAME` if it is gone)",
            stream,
            result.held,
            holders,
            stream,
        )

    def start(self) -> None:
        """Run a pass now and then every ``check_every`` seconds on a daemon thread."""
        if self._thread is not None or not self.policy.enabled:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="sluice-log-retention")
        self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                self.run_once()
            except Exception as exc:  # e.g. the log folder vanished: try again next time
                log.error("log retention failed: %s", exc)
            if self._stop.wait(self.policy.check_every):
                return

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread (a pass in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
