"""A real local HTTP receiver for the action tests (threaded ``http.server``, keep-alive).

Imported by the other ``test_actions_*`` modules; the tests here check the receiver itself.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Received:
    """One request as the receiver saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        """The body parsed as JSON."""
        return orjson.loads(self.body)


Responder = Callable[[Received], int]


class Receiver:
    """Records every request; answers with ``respond(request)`` (default 200).

    ``reply(request)`` gives the answer's body (default a small JSON object).
    """

    def __init__(
        self,
        port: int | None = None,
        respond: Responder | None = None,
        reply: Callable[[Received], bytes] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.respond: Responder = respond or (lambda _req: 200)
        self.reply = reply
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        """Listen (the port may have been refused until now)."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                req = Received(
                    self.command, self.path, dict(self.headers.items()), self.rfile.read(length)
                )
                status = receiver.respond(req)
                with receiver.lock:
                    receiver.requests.append(req)
                body = b'{"ok": true}' if status < 400 else b'{"error": "refused"}'
                body = receiver.reply(req) if receiver.reply else body
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def keys(self) -> list[str]:
        """Idempotency keys in arrival order."""
        with self.lock:
            return [r.headers.get("Idempotency-Key", "") for r in self.requests]


def test_receiver_records_requests_and_answers_with_the_responder() -> None:
    receiver = Receiver(respond=lambda req: 404 if req.path == "/missing" else 200).start()
    try:
        with httpx.Client() as client:
            ok = client.post(
                f"{receiver.url}/hook", json={"a": 1}, headers={"Idempotency-Key": "k1"}
            )
            missing = client.post(f"{receiver.url}/missing", json={})
        assert (ok.status_code, missing.status_code) == (200, 404)
        assert receiver.requests[0].json == {"a": 1}
        assert receiver.keys() == ["k1", ""]
    finally:
        receiver.stop()
