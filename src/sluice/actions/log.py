"""The ``log`` action: one JSON line per action, to a file or to the ``sluice.actions`` logger."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import orjson

from sluice.actions import KEY_WIDTH
from sluice.actions.base import Action, BatchDelivery, Delivery, OptionsModel
from sluice.core.errors import TransientActionError

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class LogOptions(OptionsModel):
    """Options of the ``log`` action: a file path (JSON lines) or the logger."""

    path: str | None = None
    level: str = "info"


class LogAction(Action):
    """Appends one JSON object per action (metadata plus the rendered payload)."""

    Options = LogOptions
    options: LogOptions
    _lock = threading.Lock()
    batched = True

    @property
    def target(self) -> str:
        """The file (or logger) written to."""
        return f"log:{self.options.path or 'logger'}"

    def deliver(self, delivery: Delivery) -> None:
        """Write one JSON line."""
        self.deliver_many([delivery])

    def deliver_many(self, deliveries: list[Delivery]) -> None:
        """Write one JSON line per delivery, in one append."""
        lines = [_line(d) for d in deliveries]
        if self.options.path is None:
            level = _LEVELS.get(self.options.level, logging.INFO)
            for line in lines:
                logging.getLogger("sluice.actions").log(level, "%s", line)
            return
        self._append("".join(line + "\n" for line in lines).encode())

    def deliver_batch(self, batch: BatchDelivery) -> None:
        """Write a stored batch's lines from its bytes (the same lines as ``deliver_many``)."""
        if self.options.path is None:
            self.deliver_many(batch.deliveries())
            return
        self._append(batch_lines(batch))

    def _append(self, data: bytes) -> None:
        """Append ``data`` to the file in one write."""
        path = Path(self.options.path or "")
        try:
            with self._lock:
                try:
                    handle = path.open("ab")
                except FileNotFoundError:  # the first write: make the folder
                    path.parent.mkdir(parents=True, exist_ok=True)
                    handle = path.open("ab")
                with handle:
                    handle.write(data)
        except OSError as exc:
            raise TransientActionError(f"cannot append to {path}: {exc}") from None


def batch_lines(batch: BatchDelivery) -> bytes:
    """The JSON lines of a stored batch, each as ``_line`` writes it, from its bytes.

    A stored key is an idempotency key (hex digits) followed by the ordering key. One bytes
    object per line: no memoryview per line (objects the garbage collector tracks; 27k of
    them alive at once cost more in collections than their copies). Arrow's string kernels
    took longer on the few hundred lines of a rule's epoch: their fixed cost per call.
    """
    head = orjson.dumps({"action": batch.action, "pipeline": batch.pipeline, "epoch": batch.epoch})
    start = head[:-1] + b',"key":'
    middle = b',"severity":' + orjson.dumps(batch.severity) + b',"idempotency_key":'
    dumps, width = orjson.dumps, KEY_WIDTH
    return b"".join(
        [
            b"%b%b%b%b,%b\n" % (start, dumps(key[width:]), middle, dumps(key[:width]), message[1:])
            if len(message) > 2  # the message's keys follow
            else start + dumps(key[width:]) + middle + dumps(key[:width]) + b',"payload":null}\n'
            for key, message in zip(batch.stored_keys, batch.messages, strict=True)
        ]
    )


def _line(delivery: Delivery) -> str:
    """The JSON line of one delivery: its metadata, then the stored message's keys.

    The message (``{"payload": ...}``; a log action renders no other field) is embedded as
    the outbox holds it, so the line is the same as encoding ``payload`` again, without
    decoding it first.
    """
    head = orjson.dumps(
        {
            "action": delivery.action,
            "pipeline": delivery.pipeline,
            "epoch": delivery.epoch,
            "key": delivery.key,
            "severity": delivery.severity,
            "idempotency_key": delivery.idempotency_key,
        }
    ).decode()
    message = delivery.text
    if len(message) <= 2:  # an empty message: no payload, as before
        return head[:-1] + ',"payload":null}'
    return head[:-1] + "," + message[1:]
