"""Source of ``type: http``: poll a REST endpoint returning a JSON array or NDJSON.

Options: ``url``; ``params`` (query) and ``headers`` (values through ``${VAR}``; never
logged); ``format`` ``json`` (an array, or an object holding it at ``records``, a dotted
path) or ``ndjson``; ``pagination`` (``type: link`` with ``next:`` a body path, else the
``Link: rel="next"`` header; ``page`` and ``offset`` with ``param:``; ``cursor`` with
``param:`` and ``next:``, the body path of the next token); an incremental ``cursor`` (a
record field, sent as ``cursor_param`` from ``start`` on); ``poll_interval``,
``rate_limit`` (requests per second), ``timeout``, ``retries`` and ``retry_delay``.

A *sweep* follows the pages from the first. The position is ``{"since", "cursor", "page",
"skip"}``: the cursor value the sweep sends, the largest cursor read, the page being read
(None: the first) and how many of its records were read. Records at or below ``since`` are
dropped (an inclusive API). A sweep's end starts the next from the first page with
``since`` = the largest cursor; without a ``cursor`` it stays on the last page and reads
what is appended there. Replaying an epoch (``until``) reads the same pages up to the same
record. Positions are committed with the sinks' epoch, so each record lands once.

429 and 5xx answers and unreachable endpoints are retried with doubling delays, honouring
``Retry-After``, then stop the run with a clear error, as does any other 4xx, a page that is
not JSON, and a pagination loop (a page fetched twice in a sweep, or the same body again).
Records arrive as ``_raw`` JSON text with ``__origin = "<host/path>@<page>#<n>"``.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Literal

import httpx
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sluice.config.models import SourceConfig
from sluice.core.errors import ConfigError, SourceError
from sluice.core.types import parse_duration
from sluice.sources.base import (
    Position,
    Source,
    SourceBatch,
    SourceContext,
    check_duration,
    validate_options,
)
from sluice.sources.http_pages import Page, PageReader

log = logging.getLogger("sluice.sources.http")
Scalar = int | float | str
PageState = int | str | None
MAX_RETRY_AFTER_S = 300.0


class PaginationOptions(BaseModel):
    """``pagination:`` of an ``http`` source."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["none", "link", "page", "offset", "cursor"] = "none"
    param: str | None = None  # page/offset/cursor: the query parameter
    next: str | None = None  # link/cursor: the body path of the next link or token
    start: int = 1  # page: the first page's number (offset starts at 0)

    @model_validator(mode="after")
    def _check(self) -> PaginationOptions:
        if self.type in ("page", "offset", "cursor") and not self.param:
            raise ValueError(f"{self.type} pagination needs 'param' (the query parameter)")
        if self.type == "cursor" and not self.next:
            raise ValueError("cursor pagination needs 'next' (the body path of the next token)")
        return self


class HttpOptions(BaseModel):
    """The options of an ``http`` source."""

    model_config = ConfigDict(extra="forbid")

    url: str
    params: dict[str, Scalar] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    records: str | None = None
    pagination: PaginationOptions = Field(default_factory=PaginationOptions)
    cursor: str | None = None
    cursor_param: str | None = None
    start: Scalar | None = None
    poll_interval: str = "10s"
    rate_limit: float | None = Field(default=None, gt=0)
    timeout: str = "30s"
    retries: int = Field(default=5, ge=0)
    retry_delay: str = "500ms"
    max_pages: int = Field(default=100_000, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _check(self) -> HttpOptions:
        if self.cursor_param is not None and self.cursor is None:
            raise ValueError("'cursor_param' needs 'cursor' (the record field it is read from)")
        return self

    _durations = field_validator("poll_interval", "timeout", "retry_delay")(
        classmethod(lambda cls, v: check_duration(v))
    )


def parse_options(config: SourceConfig) -> HttpOptions:
    """Validate the source's options (ConfigError naming the key)."""
    fmt = config.format or "json"
    if fmt not in ("json", "ndjson"):
        raise ConfigError(f"http source format {fmt!r}: expected json or ndjson", key="source")
    options = validate_options(HttpOptions, dict(config.options))
    if fmt == "ndjson" and (options.records or options.pagination.next):
        raise ConfigError(
            "an ndjson page has no body paths: leave 'records' and 'pagination.next' out "
            "(a next link comes from the Link header)",
            key="source",
        )
    return options


def retry_after(response: httpx.Response) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (seconds or an HTTP date), if any."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        return None if when is None else max(0.0, when.timestamp() - time.time())


class HttpSource(Source):
    """Pulls records from a paginated REST endpoint, incrementally by a cursor field."""

    def __init__(self, config: SourceConfig, context: SourceContext) -> None:
        super().__init__(config, context)
        self.options = parse_options(config)
        self.format = config.format or "json"
        self.pagination = self.options.pagination
        url = httpx.URL(self.options.url)
        self.name = f"{url.host}{url.path}"
        self.base_params: dict[str, str] = {k: str(v) for k, v in url.params.multi_items()}
        self.base_params.update({k: _text(v) for k, v in self.options.params.items()})
        self.endpoint = url.copy_with(query=None)
        self.poll_interval = parse_duration(self.options.poll_interval).total_seconds()
        self.retry_delay = parse_duration(self.options.retry_delay).total_seconds()
        self.timeout = parse_duration(self.options.timeout).total_seconds()
        self.reader = PageReader(
            self.format, self.options.records, self.options.cursor, self.pagination.next
        )
        self.sleep: Callable[[float], None] = time.sleep
        self.clock: Callable[[], float] = time.monotonic
        self._client: httpx.Client | None = None
        self.since: Scalar | None = None
        self.top: Scalar | None = None
        self.page: PageState = None
        self.skip = 0
        self._cache: tuple[str, Page, PageState] | None = None
        self._seen: set[str] = set()
        self._last_body: str | None = None
        self._back: tuple[PageState, int] | None = None
        self._idle = False
        self._next_poll = 0.0
        self._last_request = -1e9

    # -- requests ----------------------------------------------------------------------
    def _request(self, page: PageState) -> httpx.URL:
        """The URL of ``page`` in the current sweep (credentials only from the config)."""
        params = dict(self.base_params)
        since = self.since if self.since is not None else self.options.start
        if self.options.cursor_param is not None and since is not None:
            params[self.options.cursor_param] = _text(since)
        kind = self.pagination.type
        if kind == "link" and isinstance(page, str):
            link = httpx.URL(page)
            missing = {k: v for k, v in params.items() if k not in link.params}
            return self.endpoint.join(link).copy_merge_params(missing)
        if kind in ("page", "offset", "cursor") and self.pagination.param:
            first: PageState = self.pagination.start if kind == "page" else 0
            value = first if page is None else page
            if value is not None and not (kind == "cursor" and page is None):
                params[self.pagination.param] = str(value)
        return self.endpoint.copy_with(params=params)

    def _get(self, url: httpx.URL, where: str) -> httpx.Response:
        """GET ``url``, retrying 429/5xx and connection failures with backoff."""
        if self._client is None:
            self._client = httpx.Client(
                headers=self.options.headers, timeout=self.timeout, follow_redirects=True
            )
        delay = self.retry_delay
        for attempt in range(self.options.retries + 1):
            self._pace()
            try:
                response = self._client.get(url)
            except httpx.TransportError as exc:
                problem, wait = f"{type(exc).__name__}: {exc}", None
            else:
                if response.status_code < 400:
                    return response
                if response.status_code != 429 and response.status_code < 500:
                    raise SourceError(
                        f"{where}: HTTP {response.status_code} {response.reason_phrase}"
                    )
                problem, wait = f"HTTP {response.status_code}", retry_after(response)
            if attempt == self.options.retries:
                raise SourceError(
                    f"{where}: endpoint unavailable after {attempt + 1} attempts ({problem})"
                )
            pause = delay if wait is None else min(wait, MAX_RETRY_AFTER_S)
            log.warning("%s: %s; retrying in %.1fs", where, problem, pause)
            self.sleep(pause)
            delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")  # pragma: no cover

    def _pace(self) -> None:
        """Wait so that requests keep to ``rate_limit`` per second."""
        if self.options.rate_limit is None:
            return
        gap = 1.0 / self.options.rate_limit - (self.clock() - self._last_request)
        if gap > 0:
            self.sleep(gap)
        self._last_request = self.clock()

    def _fetch(self, page: PageState) -> tuple[Page, PageState]:
        """The records of ``page`` and the state of the page after it (cached per sweep)."""
        key = json.dumps([self.since, page])
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1], self._cache[2]
        where = f"http source {self.name} page {_label(page)}"
        response = self._get(self._request(page), where)
        body = response.text
        found = self.reader.read(body, where)
        nxt = self._next_state(page, found, response)
        if found.rows.num_rows and body == self._last_body:
            raise SourceError(f"{where}: endless pagination: the same page came back again")
        self._last_body = body
        self._cache = (key, found, nxt)
        return found, nxt

    def _next_state(self, page: PageState, found: Page, response: httpx.Response) -> PageState:
        """The page after ``page`` (None: the sweep ends there)."""
        kind, count = self.pagination.type, found.rows.num_rows
        if kind == "page":
            return (self.pagination.start if page is None else int(page)) + 1 if count else None
        if kind == "offset":
            return (0 if page is None else int(page)) + count if count else None
        if kind == "cursor":
            return found.next_value
        if kind == "link":
            link = found.next_value if self.pagination.next else _link_header(response)
            return None if not link else self._stored_link(str(response.url.join(link)))
        return None

    def _stored_link(self, link: str) -> str:
        """``link`` without the query items the config gives (they may hold credentials)."""
        url = httpx.URL(link)
        for key, value in self.base_params.items():
            if url.params.get(key) == value:
                url = url.copy_remove_param(key)
        return str(url)

    # -- the protocol --------------------------------------------------------------------
    def open(self, position: Position | None) -> None:
        """Resume at ``position`` (None: the first page of the first sweep)."""
        position = position or {}
        self.since, self.top = position.get("since"), position.get("cursor")
        self.page, self.skip = position.get("page"), int(position.get("skip", 0))
        self._cache, self._back, self._last_body = None, None, None
        self._seen = {json.dumps(self.page)}
        self._idle, self._next_poll = False, 0.0

    def position(self) -> Position:
        """Where the next record is read from."""
        found: Position = {"page": self.page, "skip": self.skip}
        if self.options.cursor is not None:
            found.update(since=self.since, cursor=self.top)
        return found

    def poll(
        self, max_rows: int, timeout: float, until: Position | None = None
    ) -> SourceBatch | None:
        """Up to ``max_rows`` new records of the current page (following pages as needed)."""
        if until is not None and self.position() == until:
            return None
        if until is None and self._idle and not self._wait(timeout):
            return None
        if self._idle:
            self._idle, self._cache, self._last_body = False, None, None
        for _ in range(self.options.max_pages + 1):
            page, nxt = self._fetch(self.page)
            end = page.rows.num_rows
            stop = until is not None and self._reaches(until)
            if stop and until is not None:
                end = min(end, int(until["skip"]))
            if self.skip < end:
                batch = self._take(page, min(max_rows, end - self.skip))
                if batch is not None:
                    return batch
                continue
            if stop and until is not None:  # the planned records are gone: end the replay
                return self._give_up(until)
            if nxt is None:
                advanced = self._end_sweep(until is None)
                if until is None:  # a new cursor is committed, even with no record
                    return self._empty(self.position()) if advanced else None
                if not advanced:
                    return self._give_up(until)
                continue
            self._follow(nxt)
        raise SourceError(
            f"http source {self.name}: endless pagination: more than "
            f"{self.options.max_pages} pages in one sweep (raise 'max_pages' if that is right)"
        )

    def _reaches(self, until: Position) -> bool:
        """True when the replay's end lies on the current page."""
        return until.get("page") == self.page and until.get("since") == (
            self.since if self.options.cursor is not None else None
        )

    def _take(self, page: Page, count: int) -> SourceBatch | None:
        """Records ``skip .. skip+count`` of ``page`` that are past ``since`` (None: none)."""
        rows = page.rows.slice(self.skip, count)
        first, self.skip, self._back = self.skip, self.skip + count, None
        index = pc.add(pa.array(range(count), pa.int64()), first)
        prefix = pa.scalar(f"{self.name}@{_label(self.page)}#")
        origin = pc.binary_join_element_wise(prefix, pc.cast(index, pa.string()), "")
        data = pa.table({"_raw": rows.column("_raw"), "__origin": origin})
        if self.options.cursor is not None:
            values = _typed(rows.column("__cursor"), page.numeric_cursor)
            if self.since is not None:
                newer = pc.greater(values, pa.scalar(self.since).cast(values.type))
                keep = pc.or_kleene(pc.is_null(values), newer)  # lines that are not JSON stay
                data, values = data.filter(keep), values.filter(keep)
            if len(values):
                biggest = _scalar(pc.max(values).as_py())
                if self.top is not None and isinstance(biggest, str) != isinstance(self.top, str):
                    raise SourceError(
                        f"http source {self.name}: cursor field {self.options.cursor!r} changed "
                        f"type (was {self.top!r}, now {biggest!r})"
                    )
                self.top = biggest if self.top is None else max(self.top, biggest)
        if data.num_rows == 0:
            return None
        return SourceBatch(data=data, raw_format="json", position=self.position())

    def _follow(self, nxt: PageState) -> None:
        """Move to the next page of the sweep, refusing one fetched before in it."""
        key = json.dumps(nxt)
        if key in self._seen:
            raise SourceError(
                f"http source {self.name}: endless pagination: page {_label(nxt)} was "
                "already fetched in this sweep"
            )
        self._seen.add(key)
        if self._back is None:
            self._back = (self.page, self.skip)
        self.page, self.skip = nxt, 0

    def _end_sweep(self, idle: bool) -> bool:
        """End the sweep (then wait ``poll_interval`` if ``idle``); True when ``since`` moved."""
        advanced = False
        if self.options.cursor is not None:  # the next sweep asks for what is past the top
            advanced = self.top != self.since
            self.since, self.page, self.skip = self.top, None, 0
        elif self._back is not None:  # the pages after the last record were empty: stay on it
            self.page, self.skip = self._back
        self._back, self._last_body, self._seen = None, None, {json.dumps(self.page)}
        if idle:
            self._idle, self._next_poll = True, self.clock() + self.poll_interval
        return advanced

    def _give_up(self, until: Position) -> SourceBatch:
        """End a replay whose records are gone, at its planned position."""
        self.open(until)
        return self._empty(dict(until))

    @staticmethod
    def _empty(position: Position) -> SourceBatch:
        """No record, and a new position to commit."""
        columns = {"_raw": pa.array([], pa.string()), "__origin": pa.array([], pa.string())}
        return SourceBatch(pa.table(columns), "json", position)

    def _wait(self, timeout: float) -> bool:
        """After a sweep, wait out ``poll_interval`` (up to ``timeout``); True if done."""
        remaining = self._next_poll - self.clock()
        if remaining > 0:
            self.sleep(min(remaining, timeout))
        return self.clock() >= self._next_poll

    @property
    def exhausted(self) -> bool:
        """True once a sweep found nothing new."""
        return self._idle

    def close(self) -> None:
        """Close the HTTP client and the page parser."""
        client, self._client = self._client, None
        if client is not None:
            client.close()
        self.reader.close()


def _text(value: Scalar) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _label(page: PageState) -> str:
    """A page's name in origins and errors (a link without its host)."""
    if page is None:
        return "first"
    if isinstance(page, str) and "://" in page:
        url = httpx.URL(page)
        return url.raw_path.decode("ascii", "replace")
    return str(page)


def _link_header(response: httpx.Response) -> str | None:
    link = response.links.get("next")
    return None if link is None else link.get("url")


def _typed(column: pa.ChunkedArray | pa.Array, numeric: bool) -> pa.Array:
    """Cursor values as numbers (when every value is one) or text."""
    values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return pc.cast(values, pa.float64()) if numeric else values


def _scalar(value: Any) -> Scalar:
    """A cursor value as a JSON scalar (integral floats as ints)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int | float | str) else str(value)
