"""A small paginated REST API on 127.0.0.1 for the ``http`` source's tests (a thread).

``GET /records`` serves ``api.records`` (JSON texts) ``limit`` at a time, paginated as
``mode`` says: ``offset`` (``?offset=``), ``page`` (``?page=``, from 1), ``link`` (a
``Link: rel="next"`` header), ``body-link`` (``{"data": [...], "next": url}``), ``token``
(``{"data": [...], "next_cursor": "..."}``) or ``none`` (everything at once). ``?since=N``
keeps records whose ``id`` >= N (an inclusive API). ``api.faults`` is a queue of answers
given before the real ones (status code, headers, body), ``api.requests`` logs every request.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    """One request the API received."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class Api:
    """The API's data, pagination and scripted faults."""

    mode: str = "offset"
    limit: int = 7
    fmt: str = "ndjson"
    records: list[bytes] = field(default_factory=list)
    faults: deque[tuple[int, dict[str, str], bytes]] = field(default_factory=deque)
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """The records endpoint."""
        return f"http://127.0.0.1:{self.port}/records"

    def add(self, records: list[bytes]) -> None:
        """Append records."""
        with self.lock:
            self.records.extend(records)

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body for one request."""
        with self.lock:
            if self.faults:
                return self.faults.popleft()
            rows = list(self.records)
        if "since" in query:
            rows = [r for r in rows if _id(r) is None or _id(r) >= int(query["since"])]
        start = {
            "offset": lambda: int(query.get("offset", 0)),
            "page": lambda: (int(query.get("page", 1)) - 1) * self.limit,
            "token": lambda: int(query.get("cursor", "c0")[1:]),
        }.get(self.mode, lambda: int(query.get("from", 0)))()
        size = len(rows) if self.mode == "none" else self.limit
        chunk, after = rows[start : start + size], start + size
        more = after < len(rows)
        headers = {"Content-Type": "application/json"}
        nxt = f"{self.url}?{_query({**query, 'from': after})}" if more else None
        if self.mode == "link" and nxt:
            headers["Link"] = f'<{nxt}>; rel="next"'
        if self.mode == "body-link":
            return 200, headers, _object(chunk, "next", nxt)
        if self.mode == "token":
            return 200, headers, _object(chunk, "next_cursor", f"c{after}" if more else None)
        if self.fmt == "ndjson":
            return 200, headers, b"".join(r + b"\n" for r in chunk)
        return 200, headers, b"[" + b",".join(chunk) + b"]"


def _id(record: bytes) -> int | None:
    try:
        value = json.loads(record)
    except ValueError:
        return None
    return value.get("id") if isinstance(value, dict) else None


def _query(query: dict[str, Any]) -> str:
    return "&".join(f"{k}={v}" for k, v in query.items())


def _object(chunk: list[bytes], key: str, value: str | None) -> bytes:
    return (
        b'{"data": ['
        + b",".join(chunk)
        + b'], "'
        + key.encode()
        + b'": '
        + json.dumps(value).encode()
        + b"}"
    )


@contextmanager
def serve(api: Api) -> Iterator[Api]:
    """Run ``api`` on a free port of 127.0.0.1 until the block ends."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            api.requests.append(Request(parts.path, query, dict(self.headers.items())))
            status, headers, body = api.answer(parts.path, query)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", api.port), Handler)
    server.daemon_threads = True
    api.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
