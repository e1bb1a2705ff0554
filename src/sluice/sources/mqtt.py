"""Source of ``type: mqtt``: a persistent MQTT session (paho-mqtt 2, MQTT 5 or 3.1.1).

Options: ``url`` (``mqtt://[user:password@]host:1883``, ``mqtts://`` for TLS), ``topic``
(one filter or a list; ``$share/<group>/<filter>`` for shared subscriptions), ``qos``
(default 1), ``format`` (``json``: one object per message), ``client_id`` (default
``sluice-<pipeline>``, with ``-<group>`` when ``sluice run --group`` is given; ``{pipeline}``
in it stands for the pipeline's name), ``username``/``password`` (or in the URL; use
``${VAR}``), ``tls`` (``{ca_file, cert_file, key_file, insecure}``), ``protocol`` (``5``
or ``3.1.1``), ``session_expiry`` (how long the broker keeps the session while the
pipeline is down, MQTT 5; default ``7d``), ``receive_maximum`` (unacknowledged messages
the broker may send at once, MQTT 5; default 65535), ``max_inflight`` (how many
unacknowledged messages the broker sends before it waits; default ``receive_maximum``, and
20, Mosquitto's ``max_inflight_messages``, for MQTT 3.1.1): when that many are held, a
poll returns at once so the epoch commits and acknowledges them. ``retries`` (5) and
``retry_delay`` (``1s``, doubling): how often to try a broker that refuses connections at
start; once connected, paho reconnects by itself (1 s to 30 s apart) and the session resumes.

The session is persistent (clean start off), so the broker queues messages while the
pipeline is down. Messages are acknowledged by hand, only after the checkpoint of the
epoch that holds them is committed (``commit``): a crash before that makes the broker
redeliver them, so nothing is lost. A redelivered message may already be in the lake (a
crash between the checkpoint and the acknowledgement, or a publisher's retry), so
exactly-once needs an id in the payload and ``dedupe`` on it.

Rows arrive as ``_raw`` text with the topic as ``_topic`` and ``__origin`` (so dead letters
name it). A position counts the messages taken since the session began:
``{"n": <count>}``; replaying an epoch takes the same count from the redelivered messages.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sluice.config.models import SourceConfig
from sluice.core.deps import require
from sluice.core.errors import SourceError
from sluice.core.types import parse_duration
from sluice.sources.base import (
    Position,
    Source,
    SourceBatch,
    SourceContext,
    check_duration,
    validate_options,
)
from sluice.sources.lines import decode_utf8

log = logging.getLogger("sluice.sources.mqtt")
CONNECT_TIMEOUT_S = 10.0
FLUSH_TIMEOUT_S = 5.0


class TlsOptions(BaseModel):
    """Certificates for ``mqtts://``."""

    model_config = ConfigDict(extra="forbid")

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False  # skip the host name check (self-signed test brokers)


class MqttOptions(BaseModel):
    """The options of an ``mqtt`` source."""

    model_config = ConfigDict(extra="forbid")

    url: str = "mqtt://127.0.0.1:1883"
    topic: str | list[str]
    qos: int = Field(default=1, ge=0, le=2)
    format: str = "json"
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    tls: TlsOptions | None = None
    protocol: str = "5"
    session_expiry: str = "7d"
    receive_maximum: int = Field(default=65535, ge=1, le=65535)
    max_inflight: int | None = Field(default=None, ge=1)
    keepalive: int = Field(default=30, ge=5)
    retries: int = Field(default=5, ge=0)
    retry_delay: str = "1s"

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError("url must be mqtt://host:port or mqtts://host:port")
        return value

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value != "json":
            raise ValueError("format must be json (one JSON object per message)")
        return value

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, value: str) -> str:
        if str(value) not in ("5", "3.1.1"):
            raise ValueError("protocol must be 5 or 3.1.1")
        return str(value)

    _durations = field_validator("session_expiry", "retry_delay")(
        classmethod(lambda cls, v: check_duration(v))
    )

    @property
    def topics(self) -> list[str]:
        """The subscribed filters."""
        return [self.topic] if isinstance(self.topic, str) else list(self.topic)

    @property
    def tls_on(self) -> bool:
        """True for ``mqtts://`` (or a ``tls`` section)."""
        return self.tls is not None or urlsplit(self.url).scheme in ("mqtts", "ssl")


def parse_options(config: SourceConfig) -> MqttOptions:
    """Validate the source's options (ConfigError naming the key)."""
    options = dict(config.options)
    if config.format is not None:
        options["format"] = config.format
    return validate_options(MqttOptions, options)


@dataclass
class Inbox:
    """Messages received and not yet taken: parallel lists, filled by paho's thread."""

    payloads: list[bytes]
    topics: list[str]
    acks: list[tuple[int, int, int]]  # (mid, qos, connection number) per message

    def take(self, count: int) -> Inbox:
        """Remove and return the first ``count`` messages (slices, no per-message loop)."""
        taken = Inbox(self.payloads[:count], self.topics[:count], self.acks[:count])
        del self.payloads[:count], self.topics[:count], self.acks[:count]
        return taken


class MqttSource(Source):
    """Subscribes with a persistent session; acknowledges after each committed epoch."""

    def __init__(self, config: SourceConfig, context: SourceContext) -> None:
        super().__init__(config, context)
        self.options = parse_options(config)
        parts = urlsplit(self.options.url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (8883 if self.options.tls_on else 1883)
        self.username = self.options.username or (unquote(parts.username or "") or None)
        self.password = self.options.password or (unquote(parts.password or "") or None)
        default_id = f"sluice-{context.pipeline}" + (f"-{context.group}" if context.group else "")
        self.client_id = (self.options.client_id or default_id).replace(
            "{pipeline}", context.pipeline
        )
        self.n = 0  # messages taken since the session began
        self._inbox = Inbox([], [], [])
        self._unacked: list[tuple[int, list[tuple[int, int, int]]]] = []  # (n after, acks)
        self._connection = 0  # counts (re)connections: packet ids are only valid within one
        self._taken = 0  # messages polled and not yet acknowledged
        window = self.options.max_inflight or (
            self.options.receive_maximum if self.options.protocol == "5" else 20
        )
        self._window = window if self.options.qos > 0 else 1 << 62
        self._lock = threading.Condition()
        self._client: Any = None
        self._connected = threading.Event()
        self._last_activity = time.monotonic()
        self._connect_error: str | None = None
        self._closing = False
        self.sleep: Callable[[float], None] = time.sleep

    # -- connection --------------------------------------------------------------------
    def _new_client(self) -> Any:
        mqtt = require("paho.mqtt.client", "mqtt", "the MQTT source")
        enums = require("paho.mqtt.enums", "mqtt", "the MQTT source")
        v5 = self.options.protocol == "5"
        kwargs: dict[str, Any] = {} if v5 else {"clean_session": False}  # MQTT 5: clean_start
        client = mqtt.Client(
            callback_api_version=enums.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            manual_ack=True,
            **kwargs,
        )
        if self.username:
            client.username_pw_set(self.username, self.password)
        if self.options.tls_on:
            tls = self.options.tls or TlsOptions()
            client.tls_set(ca_certs=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file)
            client.tls_insecure_set(tls.insecure)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _connect_properties(self) -> Any:
        if self.options.protocol != "5":
            return None
        properties = require("paho.mqtt.properties", "mqtt", "the MQTT source")
        packets = require("paho.mqtt.packettypes", "mqtt", "the MQTT source")
        props = properties.Properties(packets.PacketTypes.CONNECT)
        expiry = int(parse_duration(self.options.session_expiry).total_seconds())
        props.SessionExpiryInterval = min(expiry, 0xFFFFFFFF)
        props.ReceiveMaximum = self.options.receive_maximum
        return props

    def _on_connect(self, client: Any, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._connect_error = str(reason)
            return
        self._connect_error = None
        self._connection += 1
        client.subscribe([(topic, self.options.qos) for topic in self.options.topics])
        self._connected.set()
        log.info("mqtt %s connected (session present: %s)", self.client_id, flags.session_present)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._connected.clear()
        if not self._closing:
            log.warning("mqtt %s disconnected: %s; reconnecting", self.client_id, reason)

    def _on_message(self, _c: Any, _u: Any, message: Any) -> None:
        with self._lock:
            self._inbox.payloads.append(message.payload)
            self._inbox.topics.append(message.topic)
            self._inbox.acks.append((message.mid, message.qos, self._connection))
            self._lock.notify()

    def open(self, position: Position | None) -> None:
        """Connect with the stable client id and resume the broker's session."""
        self.n = 0 if position is None else int(position["n"])
        self._closing = False
        self._client = self._new_client()
        where = f"{self.host}:{self.port}"
        v5: dict[str, Any] = {}
        if self.options.protocol == "5":
            v5 = {"clean_start": False, "properties": self._connect_properties()}
        delay = parse_duration(self.options.retry_delay).total_seconds()
        for attempt in range(self.options.retries + 1):
            try:
                self._client.connect(self.host, self.port, keepalive=self.options.keepalive, **v5)
                break
            except (OSError, ValueError) as exc:
                if attempt == self.options.retries:
                    raise SourceError(
                        f"mqtt source: cannot connect to {where} after {attempt + 1} "
                        f"attempts: {exc}"
                    ) from None
                log.warning(
                    "mqtt source: %s unreachable (%s); retrying in %.1fs", where, exc, delay
                )
                self.sleep(delay)
                delay = min(delay * 2, 30.0)
        self._client.loop_start()
        if not self._connected.wait(CONNECT_TIMEOUT_S):
            reason = self._connect_error or "no answer"
            self.close()
            raise SourceError(f"mqtt source: the broker at {where} refused the session: {reason}")
        self._last_activity = time.monotonic()

    # -- reading -----------------------------------------------------------------------
    def poll(
        self, max_rows: int, timeout: float, until: Position | None = None
    ) -> SourceBatch | None:
        """Up to ``max_rows`` messages (during a replay, exactly those before ``until``)."""
        want = max_rows if until is None else min(max_rows, int(until["n"]) - self.n)
        if want <= 0:
            return None
        wait = timeout if until is None else max(timeout, self.context.idle_timeout)
        with self._lock:
            # With the broker's window of unacknowledged messages full, nothing more comes
            # until this epoch commits: return what is here at once.
            self._lock.wait_for(
                lambda: (
                    len(self._inbox.payloads) >= want
                    or self._taken + len(self._inbox.payloads) >= self._window
                ),
                wait,
            )
            taken = self._inbox.take(want)
        count = len(taken.payloads)
        if count == 0:
            if until is not None:  # the broker redelivered less than the epoch held
                self.n = int(until["n"])
                return SourceBatch(pa.table({}), "json", dict(until))
            return None
        self._last_activity = time.monotonic()
        self.n += count
        self._unacked.append((self.n, taken.acks))
        self._taken += count
        raw, invalid = decode_utf8(list(taken.payloads))
        topics = pa.array(taken.topics, pa.string())
        columns = {"_raw": raw, "_topic": topics, "__origin": topics}
        if pc.any(invalid).as_py():
            columns["__invalid_utf8"] = invalid
        data = pa.table(columns)
        return SourceBatch(data=data, raw_format="json", position={"n": self.n})

    @property
    def exhausted(self) -> bool:
        """True when nothing arrived for ``idle_timeout`` seconds (while connected)."""
        if not self._connected.is_set():
            self._last_activity = time.monotonic()
            return False
        return time.monotonic() - self._last_activity >= self.context.idle_timeout

    def commit(self, position: Position) -> None:
        """Acknowledge every message up to ``position`` (its epoch is committed)."""
        upto = int(position["n"])
        while self._unacked and self._unacked[0][0] <= upto:
            _, acks = self._unacked.pop(0)
            self._taken -= len(acks)
            if self._client is not None:
                for mid, qos, connection in acks:  # one PUBACK a message: the protocol's unit
                    # A message received before a reconnect was redelivered since (under the
                    # same packet id, which the broker may reuse once that copy is acked).
                    if qos > 0 and connection == self._connection:
                        self._client.ack(mid, qos)

    def close(self) -> None:
        """Disconnect (the session and its unacknowledged messages stay at the broker)."""
        client, self._client = self._client, None
        if client is None:
            return
        self._closing = True
        if self._connected.is_set():
            self._round_trip(client)
        client.disconnect()
        client.loop_stop()
        self._connected.clear()

    def _round_trip(self, client: Any) -> None:
        """Wait until the broker has handled every packet sent so far (the last acks).

        A broker drops what an old connection still had in flight when the same client id
        connects again, so a close followed at once by a new session could lose the acks.
        An UNSUBSCRIBE is answered only after everything sent before it.
        """
        answered = threading.Event()
        client.on_unsubscribe = lambda *_args: answered.set()
        client.unsubscribe(f"sluice/flush/{self.client_id}")
        answered.wait(FLUSH_TIMEOUT_S)

    def lag(self) -> dict[str, Any]:
        """Messages received and not yet taken."""
        return {"received": len(self._inbox.payloads)}
