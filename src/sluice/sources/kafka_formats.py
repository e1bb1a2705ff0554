"""Kafka payload formats beyond plain JSON/CSV lines: Avro, and JSON checked by a JSON Schema.

* ``format: avro`` with ``schema`` (an ``.avsc`` path or an inline mapping): each message
  is one Avro datum. With ``schema_registry: {url: ...}`` messages are in the Confluent
  wire format (byte 0, a 4-byte big-endian schema id, the datum); the writer schema is
  fetched once per id from ``{url}/schemas/ids/{id}`` (any Confluent-compatible registry)
  and ``schema``, if also given, is the reader schema every record is resolved to. Records
  arrive as typed Arrow columns (``raw_format="arrow"``; see ``avro_arrow`` for the types).
* ``format: json`` with ``json_schema`` (a path or an inline mapping): every message is
  validated (fastjsonschema); the valid ones keep the DuckDB JSON decode path.

A message that fails gets an ``__error`` reason (an Avro one also its bytes, base64, in
``_raw``), so the decode stage dead-letters it and the partition keeps flowing.
"""

from __future__ import annotations

import base64
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sluice.core.deps import require
from sluice.core.errors import ConfigError, SourceError
from sluice.sources.avro_arrow import (
    AvroDataError,
    AvroShape,
    Reader,
    avro_shape,
    datum_reader,
    records_table,
)

FORMATS = ("json", "csv", "avro")
RAW_FORMATS = {"json": "json", "csv": "csv", "avro": "arrow"}  # SourceBatch.raw_format
META_COLUMNS = {
    "key": "_key",
    "headers": "_headers",
    "topic": "_topic",
    "partition": "_partition",
    "offset": "_offset",
    "timestamp": "_kafka_ts",
}
WIRE_HEADER = 5  # magic byte 0 + 4-byte schema id
REGISTRY_ATTEMPTS = 3
MAX_REASON = 300

Values = list[bytes | None]


class RegistryOptions(BaseModel):
    """``schema_registry:`` keys: a Confluent-compatible schema registry."""

    model_config = ConfigDict(extra="forbid")

    url: str
    username: str | None = None
    password: str | None = None
    timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("'url' must start with http:// or https://")
        return url.rstrip("/")


class FormatOptions(Protocol):
    """The Kafka source options a payload format reads."""

    @property
    def avro_schema(self) -> str | dict[str, Any] | list[Any] | None:
        """``schema``: the Avro (reader) schema."""

    @property
    def schema_registry(self) -> RegistryOptions | None:
        """``schema_registry``: where writer schemas come from."""

    @property
    def json_schema(self) -> str | dict[str, Any] | None:
        """``json_schema``: the schema JSON messages must match."""

    @property
    def include(self) -> Sequence[str]:
        """Kafka metadata columns asked for."""


class PayloadFormat(ABC):
    """Turns one poll's message values into ``_raw`` payloads and extra columns."""

    raw_format = "json"

    @abstractmethod
    def decode(self, values: Values) -> tuple[Values, dict[str, pa.Array]]:
        """The payloads to keep as ``_raw`` and the columns to add (``__error`` among them)."""


def check_format_options(fmt: str, options: FormatOptions) -> None:
    """Reject format keys that do not go together (ConfigError naming the key)."""
    if fmt == "avro" and options.avro_schema is None and options.schema_registry is None:
        raise ConfigError(
            "format avro needs 'schema' (an .avsc file or a mapping) "
            "or 'schema_registry: {url: ...}'",
            key="source.schema",
        )
    if fmt != "avro" and options.avro_schema is not None:
        raise ConfigError(
            "'schema' applies to format avro (JSON messages use 'json_schema')",
            key="source.schema",
        )
    if fmt != "avro" and options.schema_registry is not None:
        raise ConfigError("'schema_registry' applies to format avro", key="source.schema_registry")
    if fmt != "json" and options.json_schema is not None:
        raise ConfigError("'json_schema' applies to format json", key="source.json_schema")


def payload_format(fmt: str, options: FormatOptions) -> PayloadFormat | None:
    """The payload format of ``fmt`` and ``options`` (None: plain JSON or CSV lines)."""
    if fmt == "avro":
        reserved = ["_raw", *(META_COLUMNS[name] for name in options.include)]
        reader = None
        if options.avro_schema is not None:
            document = load_document(options.avro_schema, "source.schema", "Avro schema")
            try:
                reader = avro_shape(document, reserved)
            except ValueError as exc:
                raise ConfigError(str(exc), key="source.schema") from None
        if options.schema_registry is not None:
            return AvroPayloads(reader, SchemaRegistry(options.schema_registry, reserved))
        assert reader is not None  # check_format_options saw to it
        return AvroPayloads(reader, None)
    if fmt == "json" and options.json_schema is not None:
        document = load_document(options.json_schema, "source.json_schema", "JSON schema")
        return JsonSchemaPayloads(document)
    return None


def load_document(value: str | dict[str, Any] | list[Any], key: str, what: str) -> Any:
    """An inline schema as is, or the JSON document at the path ``value``."""
    if not isinstance(value, str):
        return value
    path = Path(value).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot read the {what} {value!r}: {detail}", key=key) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"the {what} {value!r} is not JSON: {exc}", key=key) from None


def _short(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 3] + "..."


# -- JSON Schema -------------------------------------------------------------------------
class JsonSchemaPayloads(PayloadFormat):
    """JSON messages validated against a JSON Schema; the invalid ones get ``__error``."""

    raw_format = "json"

    def __init__(self, schema: Any) -> None:
        self._fjs = require("fastjsonschema", "kafka", "JSON Schema validation")
        try:
            self._validate = self._fjs.compile(schema)
        except Exception as exc:  # JsonSchemaDefinitionException, bad $ref, bad regex...
            raise ConfigError(f"not a valid JSON schema: {exc}", key="source.json_schema") from None

    def decode(self, values: Values) -> tuple[Values, dict[str, pa.Array]]:
        """Validate every message; malformed JSON is left to the decode stage to report."""
        return values, {"__error": pa.array(list(map(self._check, values)), pa.string())}

    def _check(self, payload: bytes | None) -> str | None:
        if payload is None:
            return None
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        try:
            self._validate(document)
        except self._fjs.JsonSchemaException as exc:
            return _short(f"does not match the JSON schema: {getattr(exc, 'message', exc)}")
        return None


# -- Avro --------------------------------------------------------------------------------
class AvroPayloads(PayloadFormat):
    """Avro messages (raw datums, or registry wire format) as typed Arrow columns."""

    raw_format = "arrow"

    def __init__(self, reader: AvroShape | None, registry: SchemaRegistry | None) -> None:
        self.reader = reader
        self.registry = registry
        self._plain = datum_reader(reader) if registry is None and reader is not None else None

    def decode(self, values: Values) -> tuple[Values, dict[str, pa.Array]]:
        """Read every message; failed ones keep their bytes (base64) in ``_raw``."""
        count = len(values)
        records: list[Any] = [None] * count
        errors: list[str | None] = [None] * count
        if self._plain is not None and self.reader is not None:
            schema = self.reader.arrow
            _read_all(self._plain, values, range(count), records, errors)
        else:
            schema = self._read_wire(values, records, errors)
        table = records_table(records, errors, schema)
        raw = [None if e is None else _base64(v) for v, e in zip(values, errors, strict=True)]
        columns = dict(zip(table.column_names, table.columns, strict=True))
        columns["__error"] = pa.array(errors, pa.string())
        return raw, columns

    def _read_wire(self, values: Values, records: list[Any], errors: list[str | None]) -> Any:
        """Read Confluent wire-format messages; the Arrow schema of the records read."""
        assert self.registry is not None
        by_id: dict[int, list[int]] = {}
        for i, payload in enumerate(values):
            if payload is None or len(payload) < WIRE_HEADER or payload[0] != 0:
                errors[i] = "not in the schema registry wire format (byte 0 + 4-byte schema id)"
            else:
                by_id.setdefault(int.from_bytes(payload[1:WIRE_HEADER], "big"), []).append(i)
        shapes: list[pa.Schema] = [self.reader.arrow] if self.reader is not None else []
        for schema_id, rows in by_id.items():
            writer = self.registry.shape(schema_id)
            if isinstance(writer, str):
                _fail(rows, writer, errors)
                continue
            if self.reader is None:
                unified = _unify([*shapes, writer.arrow])
                if unified is None:
                    reason = f"schema id {schema_id} conflicts with another in the batch"
                    _fail(rows, reason, errors)
                    continue
                shapes = [unified]
            read = datum_reader(writer, self.reader, start=WIRE_HEADER)
            _read_all(read, values, rows, records, errors, f" (schema id {schema_id})")
        return shapes[0] if shapes else pa.schema([])


def _read_all(
    read: Reader,
    values: Values,
    rows: Sequence[int],
    records: list[Any],
    errors: list[str | None],
    suffix: str = "",
) -> None:
    """``records[i] = read(values[i])`` for ``rows``; a failure goes to ``errors[i]``."""
    for i in rows:
        try:
            records[i] = read(values[i])
        except AvroDataError as exc:
            errors[i] = _short(f"{exc}{suffix}")


def _fail(rows: Sequence[int], reason: str, errors: list[str | None]) -> None:
    for i in rows:
        errors[i] = reason


def _unify(schemas: list[pa.Schema]) -> pa.Schema | None:
    """One Arrow schema for records of several Avro schemas (None when they conflict)."""
    if len(schemas) == 1:
        return schemas[0]
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def _base64(payload: bytes | None) -> bytes | None:
    """A binary payload as dead-letter text."""
    return None if payload is None else b"base64:" + base64.b64encode(payload)


# -- schema registry ---------------------------------------------------------------------
class SchemaRegistry:
    """Writer schemas by id from a Confluent-compatible registry, each fetched once."""

    def __init__(self, options: RegistryOptions, reserved: Sequence[str] = ()) -> None:
        self.options = options
        self.where = redact(options.url)
        self._reserved = list(reserved)
        self._auth = (
            (options.username, options.password or "") if options.username is not None else None
        )
        self._cache: dict[int, AvroShape | str] = {}

    def shape(self, schema_id: int) -> AvroShape | str:
        """The schema of ``schema_id``, or why its messages cannot be read (a reason)."""
        found = self._cache.get(schema_id)
        if found is None:
            found = self._cache[schema_id] = self._fetch(schema_id)
        return found

    def _fetch(self, schema_id: int) -> AvroShape | str:
        """GET ``/schemas/ids/{id}``; retries on 5xx and network errors, then SourceError."""
        url = f"{self.options.url}/schemas/ids/{schema_id}"
        headers = {"Accept": "application/vnd.schemaregistry.v1+json, application/json"}
        problem = ""
        for attempt in range(REGISTRY_ATTEMPTS):
            if attempt:
                time.sleep(0.5 * 2 ** (attempt - 1))
            try:
                response = httpx.get(
                    url, headers=headers, auth=self._auth, timeout=self.options.timeout_s
                )
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
                continue
            if response.status_code >= 500 or response.status_code == 429:
                problem = f"HTTP {response.status_code}"
                continue
            return self._answer(schema_id, response)
        raise SourceError(
            f"schema registry {self.where} unreachable ({problem}) "
            f"after {REGISTRY_ATTEMPTS} attempts"
        )

    def _answer(self, schema_id: int, response: httpx.Response) -> AvroShape | str:
        """The shape in a registry answer, or the reason its messages fail."""
        status = response.status_code
        if status in (401, 403):
            raise SourceError(
                f"schema registry {self.where} refused access (HTTP {status}); "
                "check schema_registry username/password"
            )
        if status == 404:
            return f"schema id {schema_id} is not in the schema registry"
        if status != 200:
            return f"schema registry answered HTTP {status} for schema id {schema_id}"
        try:
            body = response.json()
            kind = body.get("schemaType") or "AVRO"
            document = json.loads(body["schema"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return f"schema registry sent no schema for schema id {schema_id}"
        if kind != "AVRO":
            return f"schema id {schema_id} is a {kind} schema, not Avro"
        try:
            return avro_shape(document, self._reserved)
        except ValueError as exc:
            return _short(f"schema id {schema_id}: {exc}")


def redact(url: str) -> str:
    """``url`` without user and password (safe for messages and logs)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
