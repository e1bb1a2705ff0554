"""The ``kafka`` action: produce the payload as JSON to a topic, keyed by the action key.

confluent-kafka is imported lazily (``pip install "sluice[kafka]"``). The producer is
idempotent; the idempotency key travels as the ``idempotency-key`` record header.
"""

from __future__ import annotations

import threading
from typing import Any

import orjson
from pydantic import Field, field_validator

from sluice.actions.base import Action, ActionContext, Delivery, OptionsModel
from sluice.actions.webhook import _check_timeout
from sluice.core.deps import require
from sluice.core.errors import PermanentActionError, TransientActionError
from sluice.core.types import duration_us


class KafkaOptions(OptionsModel):
    """Options of the ``kafka`` action."""

    bootstrap_servers: str
    topic: str
    config: dict[str, Any] = Field(default_factory=dict)
    timeout: str | float = "10s"

    _t = field_validator("timeout")(classmethod(lambda cls, v: _check_timeout(v)))


class KafkaAction(Action):
    """Produces one record per action and waits for the broker's acknowledgement."""

    Options = KafkaOptions
    options: KafkaOptions

    def __init__(self, name: str, options: KafkaOptions, context: ActionContext) -> None:
        super().__init__(name, options, context)
        self._producer: Any = None
        self._lock = threading.Lock()

    @property
    def target(self) -> str:
        """The cluster."""
        return f"kafka://{self.options.bootstrap_servers}"

    def _get_producer(self) -> Any:
        with self._lock:
            if self._producer is None:
                kafka = require("confluent_kafka", "kafka", "the Kafka action")
                self._producer = kafka.Producer(
                    {
                        "bootstrap.servers": self.options.bootstrap_servers,
                        "enable.idempotence": True,
                        "acks": "all",
                        "message.timeout.ms": int(duration_us(self.options.timeout) / 1000),
                        **self.options.config,
                    }
                )
            return self._producer

    def deliver(self, delivery: Delivery) -> None:
        """Produce and flush; broker errors are transient (bounded by retries) unless fatal."""
        producer = self._get_producer()
        errors: list[Any] = []
        value = orjson.dumps(delivery.payload, default=str)
        try:
            producer.produce(
                self.options.topic,
                value=value,
                key=delivery.key.encode() if delivery.key else None,
                headers={"idempotency-key": delivery.idempotency_key},
                on_delivery=lambda err, _msg: errors.append(err) if err else None,
            )
        except BufferError as exc:
            raise TransientActionError(f"producer queue full: {exc}") from None
        except Exception as exc:  # KafkaException for bad config/topic
            raise PermanentActionError(f"cannot produce to {self.options.topic}: {exc}") from None
        remaining = producer.flush(duration_us(self.options.timeout) / 1e6)
        if remaining:
            raise TransientActionError(
                f"timeout producing to {self.options.topic} on {self.target}"
            )
        if errors:
            err = errors[0]
            text = f"cannot produce to {self.options.topic}: {err.str()}"
            if err.fatal():
                raise PermanentActionError(text)
            raise TransientActionError(text)

    def close(self) -> None:
        """Flush outstanding records."""
        if self._producer is not None:
            self._producer.flush(5)
