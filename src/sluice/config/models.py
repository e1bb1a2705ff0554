"""Pydantic models of the pipeline file; YAML and Python build the same objects."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sluice.core.errors import ConfigError
from sluice.core.types import SCHEMA_TYPES, parse_duration

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


_NAME_MAX = 100  # the metadata DB's name columns hold 100 characters (model names)


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{what} {value!r} must start with a letter or _ and use only letters, digits, _ and -"
        )
    if len(value) > _NAME_MAX:
        raise ValueError(f"{what} {value[:20]!r}... is longer than {_NAME_MAX} characters")
    return value


def _check_table(value: str | None, what: str) -> str | None:
    """A lake table: a plain name, or an absolute path or URL; never one that climbs (``..``)."""
    if value is None:
        return value
    located = "://" in value or value.startswith("/")
    parts = re.split(r"[/\\]", value.partition("://")[2] if "://" in value else value)
    if ".." in parts or (not located and (len(parts) > 1 or value in ("", "."))):
        raise ValueError(
            f"{what} {value!r} must be a plain name (no '/', '\\' or '..') or an absolute "
            "path or URL without '..'"
        )
    return value


def _check_duration(value: Any) -> Any:
    if value is not None:
        try:
            parse_duration(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return value


class Strict(BaseModel):
    """Base for config models: unknown keys are errors, so typos are caught."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Open(BaseModel):
    """Base for plug-in configs: common keys are typed, type-specific keys pass through."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @property
    def options(self) -> dict[str, Any]:
        """Return the type-specific keys (those not declared on the model)."""
        return dict(self.model_extra or {})


class FieldSpec(Strict):
    """One schema column: its type, whether it is required, and a default."""

    type: str
    required: bool = False
    default: Any = None

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in SCHEMA_TYPES:
            raise ValueError(f"unknown type {value!r}; expected one of {', '.join(SCHEMA_TYPES)}")
        return value


class SourceConfig(Open):
    """The source: ``type`` selects the implementation, other keys are its options."""

    type: str
    format: str | None = None


class EnrichSpec(Strict):
    """Lookup join against a CSV/Parquet file or a warehouse table."""

    on: str | list[str]
    path: str | None = None
    table: str | None = None
    columns: list[str] | None = None
    prefix: str = ""
    how: str = "left"

    @model_validator(mode="after")
    def _one_origin(self) -> EnrichSpec:
        if (self.path is None) == (self.table is None):
            raise ValueError("enrich needs exactly one of 'path' or 'table'")
        if self.how not in ("left", "inner"):
            raise ValueError("enrich 'how' must be 'left' or 'inner'")
        return self


class WindowSpec(Strict):
    """Tumbling (no ``slide``) or sliding event-time window with SQL aggregates."""

    key: str | list[str] | None = None
    size: str
    slide: str | None = None
    aggregate: dict[str, str]
    into: str | None = None
    allowed_lateness: str = "0s"
    time: str | None = None

    _dur = field_validator("size", "slide", "allowed_lateness")(
        classmethod(lambda cls, v: _check_duration(v))
    )
    _into = field_validator("into")(classmethod(lambda cls, v: _check_table(v, "window into")))


class DedupeSpec(Strict):
    """Drop repeats of ``key`` seen within ``window`` (event time)."""

    key: str | list[str]
    window: str = "10m"

    _dur = field_validator("window")(classmethod(lambda cls, v: _check_duration(v)))


class TransformStep(Strict):
    """One transform step; exactly one of its keys is set."""

    filter: str | None = None
    derive: dict[str, str] | None = None
    select: list[str] | None = None
    rename: dict[str, str] | None = None
    enrich: EnrichSpec | None = None
    window: WindowSpec | None = None
    dedupe: DedupeSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if v is not None}
            kinds = [k for k in data if k in cls.model_fields]
            if len(data) != 1 or len(kinds) != 1:
                raise ValueError(
                    "a transform step is one of: "
                    + ", ".join(cls.model_fields)
                    + f" (got {', '.join(map(str, data)) or 'nothing'})"
                )
        return data

    @property
    def kind(self) -> str:
        """Return the step's kind (``filter``, ``derive``, ...)."""
        return next(k for k in type(self).model_fields if getattr(self, k) is not None)

    @property
    def spec(self) -> Any:
        """Return the step's specification."""
        return getattr(self, self.kind)


class DriftSpec(Strict):
    """Watch a model's inputs and score for drift; ``on_drift`` says what to do."""

    features: list[str] | None = None  # default: the model's features
    reference: int = Field(default=5_000, gt=100)  # rows that form the reference distribution
    window: int = Field(default=5_000, gt=100)  # rows per comparison window
    psi_threshold: float = 0.25
    ks_threshold: float = 0.2
    on_drift: str = "alert"  # alert | retrain | none

    @field_validator("on_drift")
    @classmethod
    def _known_reaction(cls, value: str) -> str:
        if value not in ("alert", "retrain", "none"):
            raise ValueError("on_drift must be alert, retrain or none")
        return value


class ModelConfig(Open):
    """A model scoring the stream: ``type`` selects the implementation."""

    name: str
    type: str
    features: list[str] = Field(default_factory=list)
    key: str | None = None
    drift: DriftSpec | None = None

    _n = field_validator("name")(classmethod(lambda cls, v: _check_name(v, "model name")))


class ActionConfig(Open):
    """A rule and what to do when it holds."""

    name: str
    when: str
    type: str

    _n = field_validator("name")(classmethod(lambda cls, v: _check_name(v, "action name")))


class SinkConfig(Open):
    """A destination: ``lake``, ``warehouse``, ``kafka``, ..."""

    type: str
    table: str | None = None

    @model_validator(mode="after")
    def _lake_table(self) -> SinkConfig:
        if self.type == "lake":
            _check_table(self.table, "lake table")
        return self


class DeadLetterConfig(Strict):
    """Where rejected records go (a lake table)."""

    table: str = "dead_letter"

    _t = field_validator("table")(classmethod(lambda cls, v: _check_table(v, "dead-letter table")))


class BatchConfig(Strict):
    """Micro-batch bounds: a batch closes at ``max_rows`` rows or after ``max_latency``."""

    max_rows: int = Field(default=200_000, gt=0)
    max_latency: str = "1s"

    _dur = field_validator("max_latency")(classmethod(lambda cls, v: _check_duration(v)))


class Pipeline(Strict):
    """A whole pipeline: source → validate → transforms → models → actions → sinks."""

    name: str
    source: SourceConfig
    schema_: dict[str, str | FieldSpec] = Field(default_factory=dict, alias="schema")
    event_time: str | None = None
    transforms: list[TransformStep] = Field(default_factory=list)
    models: list[ModelConfig] = Field(default_factory=list)
    actions: list[ActionConfig] = Field(default_factory=list)
    sinks: list[SinkConfig] = Field(default_factory=list)
    dead_letter: DeadLetterConfig = Field(default_factory=DeadLetterConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    source_file: str | None = Field(default=None, exclude=True)

    _n = field_validator("name")(classmethod(lambda cls, v: _check_name(v, "pipeline name")))

    @field_validator("schema_")
    @classmethod
    def _types(cls, value: dict[str, str | FieldSpec]) -> dict[str, str | FieldSpec]:
        for col, spec in value.items():
            typ = spec if isinstance(spec, str) else spec.type
            if typ not in SCHEMA_TYPES:
                raise ValueError(
                    f"column {col!r}: unknown type {typ!r}; expected one of "
                    + ", ".join(SCHEMA_TYPES)
                )
        return value

    @model_validator(mode="after")
    def _event_time_in_schema(self) -> Pipeline:
        if self.event_time and self.schema_ and self.event_time not in self.schema_:
            raise ValueError(f"event_time {self.event_time!r} is not a column of the schema")
        names = [m.name for m in self.models] + [a.name for a in self.actions]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate model/action names: {', '.join(sorted(dupes))}")
        return self

    @property
    def fields(self) -> dict[str, FieldSpec]:
        """Return the schema with every column as a FieldSpec (event_time is required)."""
        out: dict[str, FieldSpec] = {}
        for col, spec in self.schema_.items():
            fs = FieldSpec(type=spec) if isinstance(spec, str) else spec
            if col == self.event_time and not fs.required:
                fs = fs.model_copy(update={"required": True})
            out[col] = fs
        return out
