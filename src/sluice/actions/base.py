"""Actions turn scored rows into deliveries (webhook, Kafka, e-mail, jobs, ...).

Integration contract with the runner (``runners/local.py`` through ``runners/stages.py``):

* ``engine = ActionEngine(pipeline.actions, pipeline=name, settings=settings)`` once per run
  (optional ``event_time=`` column and ``job_runner=`` callable) compiles the rules and
  opens nothing; ``engine.check(schema)`` binds the conditions (``sluice validate``);
  ``engine.start()`` migrates the outbox tables and starts the dispatcher; ``engine.close()``
  drains what is due and stops it.
* per epoch: ``pending = engine.evaluate(table, ctx)`` after the models;
  at checkpoint: ``CheckpointStore.commit(..., writers=[engine.outbox_writer(pending, epoch)])``
  so outbox rows are durable in the same transaction as the epoch;
  after the commit: ``engine.notify()`` wakes the dispatcher.
* ``engine.state()`` / ``engine.restore(blob)`` checkpoint rule state (for/dedupe/cooldown).

An action type is a class with an ``Options`` pydantic model (its type-specific keys),
``template_fields`` (option names rendered per fired row with Jinja2) and ``deliver``,
which raises ``TransientActionError`` (retry) or ``PermanentActionError`` (give up).
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from sluice.actions import KEY_WIDTH
from sluice.core.errors import ConfigError, PermanentActionError
from sluice.core.plugins import load_plugin
from sluice.core.settings import Settings

BUILTIN_ACTIONS = {
    "webhook": "sluice.actions.webhook:WebhookAction",
    "slack": "sluice.actions.webhook:SlackAction",
    "log": "sluice.actions.log:LogAction",
    "email": "sluice.actions.email:EmailAction",
    "kafka": "sluice.actions.kafka:KafkaAction",
    "run_job": "sluice.actions.jobs:RunJobAction",
    "airflow": "sluice.actions.airflow:AirflowAction",
}

JobRunner = Callable[[str, dict[str, Any], str], Any]
"""``job_runner(job_name, params, idempotency_key)`` starts a Sluice job (orchestration)."""

_SECRET_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class OptionsModel(BaseModel):
    """Base of every action type's options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


@dataclass
class ActionContext:
    """What an action type needs from the runtime."""

    pipeline: str
    settings: Settings | None = None
    job_runner: JobRunner | None = None


class Delivery:
    """One outbox record handed to an action type for delivery.

    The message is kept as the outbox's JSON ``text`` and decoded on first use, so an
    action type that writes JSON (``log``) can embed the text without a decode/encode.
    """

    __slots__ = (
        "_message",
        "_text",
        "action",
        "attempt",
        "epoch",
        "extra",
        "id",
        "idempotency_key",
        "key",
        "pipeline",
        "severity",
    )

    def __init__(
        self,
        id: int,
        pipeline: str,
        action: str,
        epoch: int,
        key: str,
        severity: str,
        idempotency_key: str,
        message: dict[str, Any] | None = None,
        attempt: int = 1,
        extra: dict[str, Any] | None = None,
        *,
        text: str | None = None,
    ) -> None:
        if message is None and text is None:
            message = {}
        self.id, self.pipeline, self.action, self.epoch = id, pipeline, action, epoch
        self.key, self.severity, self.idempotency_key = key, severity, idempotency_key
        self.attempt = attempt
        self.extra: dict[str, Any] = extra if extra is not None else {}
        self._message, self._text = message, text

    @property
    def message(self) -> dict[str, Any]:
        """The stored message: ``payload`` plus the rendered template fields."""
        if self._message is None:
            self._message = orjson.loads(self._text or "{}")
        return self._message

    @property
    def text(self) -> str:
        """The message as a JSON object text (as stored in the outbox)."""
        if self._text is None:
            self._text = orjson.dumps(self._message, default=str).decode()
        return self._text

    @property
    def payload(self) -> Any:
        """The rendered payload (a JSON value)."""
        return self.message.get("payload")

    def __repr__(self) -> str:
        return (
            f"Delivery(id={self.id!r}, pipeline={self.pipeline!r}, action={self.action!r}, "
            f"epoch={self.epoch!r}, key={self.key!r}, attempt={self.attempt!r})"
        )


@dataclass
class BatchDelivery:
    """The messages of one stored batch, all at their first attempt, for one call.

    Message ``i`` is outbox row ``first_id + i``, with JSON text ``messages[i]`` (UTF-8
    bytes) and stored key ``stored_keys[i]``: its idempotency key (``KEY_WIDTH``
    characters) followed by its ordering key.
    """

    first_id: int
    pipeline: str
    action: str
    epoch: int
    severity: str
    stored_keys: list[str]
    messages: list[bytes]

    def __len__(self) -> int:
        return len(self.messages)

    @property
    def keys(self) -> list[str]:
        """The ordering key of each message."""
        return [key[KEY_WIDTH:] for key in self.stored_keys]

    @property
    def idempotency_keys(self) -> list[str]:
        """The idempotency key of each message."""
        return [key[:KEY_WIDTH] for key in self.stored_keys]

    def deliveries(self) -> list[Delivery]:
        """One ``Delivery`` per message."""
        pipeline, action, epoch, severity = self.pipeline, self.action, self.epoch, self.severity
        return [
            Delivery(
                self.first_id + i, pipeline, action, epoch, key, severity, idem, text=m.decode()
            )
            for i, (key, idem, m) in enumerate(
                zip(self.keys, self.idempotency_keys, self.messages, strict=True)
            )
        ]


class Action(ABC):
    """A delivery target; ``deliver`` raises Transient/PermanentActionError on failure."""

    Options: ClassVar[type[OptionsModel]] = OptionsModel
    template_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, options: OptionsModel, context: ActionContext) -> None:
        self.name = name
        self.options = options
        self.context = context

    @property
    def target(self) -> str:
        """Circuit-breaker identity (a host, a broker, a server); defaults to the action."""
        return f"{self.context.pipeline}/{self.name}"

    def templates(self) -> dict[str, str]:
        """The option templates rendered per fired row, by field name."""
        out: dict[str, str] = {}
        for name in self.template_fields:
            value = getattr(self.options, name, None)
            if isinstance(value, str):
                out[name] = value
        return out

    @abstractmethod
    def deliver(self, delivery: Delivery) -> None:
        """Deliver one record; raise TransientActionError or PermanentActionError on failure."""

    # An action type that can deliver many records at once, all or none (a local file),
    # sets ``batched`` and overrides ``deliver_many``; the dispatcher then hands it every
    # due row of a round in outbox order instead of one call per row on its thread pool.
    batched: ClassVar[bool] = False

    def deliver_many(self, deliveries: list[Delivery]) -> None:
        """Deliver ``deliveries`` in order, all or none; raise like ``deliver`` on failure."""
        for delivery in deliveries:
            self.deliver(delivery)

    def deliver_batch(self, batch: BatchDelivery) -> None:
        """Deliver a whole stored batch like ``deliver_many`` (a type may skip the objects)."""
        self.deliver_many(batch.deliveries())

    @property
    def batch_group(self) -> Hashable | None:
        """Actions (of any rule) with the same group deliver their stored batches together,
        in one ``deliver_batches`` call; None: each batch on its own."""
        return None

    def deliver_batches(self, batches: list[BatchDelivery]) -> None:
        """Deliver the stored batches of actions in this action's ``batch_group``, in order,
        all or none (a type that sets a group overrides it)."""
        for batch in batches:
            self.deliver_batch(batch)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def parse_options(model: type[OptionsModel], options: dict[str, Any], action: str) -> Any:
    """Validate ``options`` with ``model``; errors name the action and the key."""
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or None
        raise ConfigError(f"action {action!r}: {first['msg']}", key=key) from None


def create_action(
    type_name: str, name: str, options: dict[str, Any], context: ActionContext
) -> Action:
    """Instantiate the action type ``type_name`` with its validated options."""
    cls = load_plugin("actions", type_name, BUILTIN_ACTIONS)
    action: Action = cls(name, parse_options(cls.Options, options, name), context)
    return action


def resolve_secrets(text: str, what: str) -> str:
    """Replace ``${VAR}`` with the environment value at delivery time (never stored)."""

    def sub(match: re.Match[str]) -> str:
        value = os.environ.get(match.group(1))
        if value is None:
            raise PermanentActionError(f"{what}: environment variable {match.group(1)} is not set")
        return value

    return _SECRET_REF.sub(sub, text)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each secret (4+ characters) and each 8+ character word of one redacted."""
    words: set[str] = set()
    for secret in secrets:
        words.update([secret] if len(secret) >= 4 else [])
        words.update(w for w in re.split(r"[\s,;:]+", secret) if len(w) >= 8)
    for word in sorted(words, key=len, reverse=True):
        text = text.replace(word, "[redacted]")
    return text


def redact_url(url: str) -> str:
    """``scheme://host:port`` of ``url`` (paths and queries may hold secrets)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"
