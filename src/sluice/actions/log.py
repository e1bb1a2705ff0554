"""The ``log`` action: one JSON line per action, to a file or to the ``sluice.actions`` logger."""

from __future__ import annotations

import logging
import threading
from itertools import chain
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from sluice.actions import KEY_WIDTH
from sluice.actions.base import Action, BatchDelivery, Delivery, OptionsModel
from sluice.core.arrays import binaries, from_numpy, scalar
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
        self.deliver_batches([batch])

    @property
    def batch_group(self) -> tuple[str, str] | None:
        """The file: every rule's log action writing to it appends a round's batches at once."""
        return ("log", self.options.path) if self.options.path is not None else None

    def deliver_batches(self, batches: list[BatchDelivery]) -> None:
        """Append the lines of ``batches`` (of any log action to this file) in one write."""
        if self.options.path is None:
            for batch in batches:
                self.deliver_many(batch.deliveries())
            return
        if batches:
            self._append(batch_lines(batches))

    def _append(self, data: bytes | pa.Buffer) -> None:
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


def batch_lines(batches: list[BatchDelivery]) -> bytes | pa.Buffer:
    """The JSON lines of stored batches, each as ``_line`` writes it, made by Arrow kernels
    for all the batches at once (most of the work without the interpreter lock).

    A stored key is an idempotency key (hex digits, JSON as it is between quotes) followed
    by the ordering key, encoded once per distinct key. A message is a JSON object: its
    keys follow the metadata (its first byte, ``{``, dropped); ``{}`` gives no payload.
    """
    sizes = [len(batch) for batch in batches]
    if not sum(sizes):
        return b""
    heads, middles = [], []
    for batch in batches:
        head = {"action": batch.action, "pipeline": batch.pipeline, "epoch": batch.epoch}
        heads.append(orjson.dumps(head)[:-1] + b',"key":')
        middles.append(b',"severity":' + orjson.dumps(batch.severity) + b',"idempotency_key":"')
    of_batch = from_numpy(np.repeat(np.arange(len(batches)), sizes))
    stored_keys = chain.from_iterable(batch.stored_keys for batch in batches)
    stored = binaries(list(map(str.encode, stored_keys)), pa.string())
    # pc.binary_slice fails on some arrays in pyarrow 26 ("Negative buffer resize"); the
    # idempotency key is ASCII, so slicing code points slices its bytes
    keys = pc.dictionary_encode(pc.utf8_slice_codeunits(stored, KEY_WIDTH))
    key_json = binaries([orjson.dumps(key) for key in keys.dictionary.to_pylist()])
    messages = binaries(list(chain.from_iterable(batch.messages for batch in batches)))
    rest = pc.if_else(
        pc.greater(pc.binary_length(messages), scalar(2, pa.int64())),
        pc.replace_substring(messages, b"{", b"", max_replacements=1),
        _NO_PAYLOAD,
    )
    lines = pc.binary_join_element_wise(
        binaries(heads).take(of_batch),
        key_json.take(keys.indices),
        binaries(middles).take(of_batch),
        pc.utf8_slice_codeunits(stored, 0, KEY_WIDTH).cast(pa.binary()),
        _QUOTE_COMMA,
        rest,
        _NEWLINE,
        _NOTHING,
    )
    offsets = np.frombuffer(lines.buffers()[1], np.int32)[lines.offset :][: len(lines) + 1]
    return lines.buffers()[2][int(offsets[0]) : int(offsets[-1])]


_NO_PAYLOAD = scalar(b'"payload":null}', pa.binary())
_QUOTE_COMMA, _NEWLINE, _NOTHING = (scalar(b, pa.binary()) for b in (b'",', b"\n", b""))


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
