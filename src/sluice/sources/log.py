"""Source of ``type: log``: reads a stream of the embedded durable log.

Options: ``stream`` (required). Rows arrive as ``_raw`` JSON strings with
``__origin = "<stream>@<offset>"``; the position is ``{"offset": <next offset>}``.
After each durable checkpoint the position is also recorded as this pipeline's consumer
position in the log, which bounds retention and drives the API's backpressure (429).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sluice.config.models import SourceConfig
from sluice.core.errors import ConfigError
from sluice.core.settings import Settings
from sluice.sources.base import Position, Source, SourceBatch, SourceContext
from sluice.storage.log import EmbeddedLog, check_stream_name, open_log


class LogSource(Source):
    """Reads one embedded-log stream from a committed offset."""

    def __init__(self, config: SourceConfig, context: SourceContext) -> None:
        super().__init__(config, context)
        stream = config.options.get("stream")
        if not isinstance(stream, str) or not stream:
            raise ConfigError("a log source needs 'stream: <name>'", key="source.stream")
        try:
            self.stream = check_stream_name(stream)
        except ValueError as exc:
            raise ConfigError(str(exc), key="source.stream") from None
        self._log: EmbeddedLog | None = None
        self.offset = 0

    @property
    def log(self) -> EmbeddedLog:
        """The embedded log, opened on first use (the constructor opens nothing)."""
        if self._log is None:
            self._log = open_log(Settings(home=Path(self.context.home)).log_dir)
        return self._log

    def open(self, position: Position | None) -> None:
        """Start at ``position["offset"]`` (None: the oldest retained record)."""
        self.log.create(self.stream)
        if position is None:
            self.offset = self.log.start_offset(self.stream)
        else:
            self.offset = int(position["offset"])
        self.log.commit_consumer(self.stream, self.context.pipeline, self.offset)

    def poll(
        self, max_rows: int, timeout: float, until: Position | None = None
    ) -> SourceBatch | None:
        """Return up to ``max_rows`` records (exactly those before ``until`` when given)."""
        stop = None if until is None else int(until["offset"])
        limit = max_rows if stop is None else max(0, stop - self.offset)
        if limit == 0:
            return None
        if stop is None and not self.log.wait(self.stream, self.offset, timeout):
            return None
        records = self.log.read(self.stream, self.offset, limit, until=stop)
        if records.num_rows == 0:
            return None
        offsets = records.column("_offset")
        origin = pc.binary_join_element_wise(
            pa.scalar(f"{self.stream}@"), pc.cast(offsets, pa.string()), ""
        )
        self.offset = int(offsets[-1].as_py()) + 1
        data = pa.table({"_raw": records.column("_raw"), "__origin": origin})
        return SourceBatch(data=data, raw_format="json", position={"offset": self.offset})

    @property
    def exhausted(self) -> bool:
        """True when no record exists past the current position."""
        return self.offset >= self.log.end_offset(self.stream)

    def commit(self, position: Position) -> None:
        """Record the checkpointed position as this pipeline's consumer offset in the log."""
        self.log.commit_consumer(self.stream, self.context.pipeline, int(position["offset"]))

    def lag(self) -> dict[str, Any]:
        """Records appended to the stream but not yet read."""
        return {self.stream: max(0, self.log.end_offset(self.stream) - self.offset)}
