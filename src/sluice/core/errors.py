"""Sluice's exception tree: one root, with transient/permanent markers the retry layer reads.

    SluiceError
    ├── ConfigError            a pipeline/jobs file or setting is wrong (file:line: key: message)
    ├── MissingDependencyError an optional extra is not installed (names the pip extra)
    ├── SchemaError            data does not fit the declared schema
    ├── SourceError            a source cannot be read
    ├── SinkError              a sink cannot be written
    ├── ModelError             a model cannot be loaded or fails at inference
    ├── ActionError            an action cannot be delivered
    ├── QueryError             a query is invalid or not allowed (read-only)
    ├── StateError             checkpoint / metadata store problems
    └── NotFoundError          a named object (table, model, stream, job) does not exist

Any of them may also inherit ``TransientError`` (retry may help) or ``PermanentError``
(retrying will not help).
"""

from __future__ import annotations


class SluiceError(Exception):
    """Root of every error Sluice raises on purpose."""


class TransientError(SluiceError):
    """Marker: the operation may succeed if retried (network blip, lock, broker down)."""


class PermanentError(SluiceError):
    """Marker: retrying will not help (bad input, 4xx, wrong configuration)."""


class ConfigError(PermanentError):
    """A pipeline file, jobs file or setting is invalid."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.file, self.line, self.key, self.detail = file, line, key, message
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        super().__init__(f"{where}{key + ': ' if key else ''}{message}")

    def within(self, where: str) -> ConfigError:
        """The same error with its key placed under ``where`` (``models[0]`` + ``type``)."""
        if self.key and self.key.startswith(where):
            return self
        key = f"{where}.{self.key}" if self.key else where
        return ConfigError(self.detail, file=self.file, line=self.line, key=key)


class MissingDependencyError(SluiceError, ImportError):
    """An optional dependency is missing; the message names the pip extra that provides it."""

    def __init__(self, package: str, extra: str, feature: str = "") -> None:
        self.package, self.extra = package, extra
        what = f" for {feature}" if feature else ""
        super().__init__(
            f"{package} is required{what} but is not installed. "
            f'Install it with: pip install "sluice[{extra}]"'
        )


class SchemaError(PermanentError):
    """Data does not fit the declared schema."""


class SourceError(SluiceError):
    """A source cannot be read."""


class TransientSourceError(SourceError, TransientError):
    """A source is temporarily unavailable."""


class SinkError(SluiceError):
    """A sink cannot be written."""


class TransientSinkError(SinkError, TransientError):
    """A sink is temporarily unavailable (database down, table locked)."""


class ModelError(SluiceError):
    """A model cannot be loaded, or fails at inference."""


class ActionError(SluiceError):
    """An action cannot be delivered."""


class TransientActionError(ActionError, TransientError):
    """A delivery failed in a way that a retry may fix (timeout, 5xx, connection refused)."""


class PermanentActionError(ActionError, PermanentError):
    """A delivery failed for good (4xx, template error)."""


class QueryError(PermanentError):
    """A query is invalid or is not allowed (queries are read-only)."""


class StateError(SluiceError):
    """The checkpoint or metadata store is inconsistent or unavailable."""


class NotFoundError(PermanentError, LookupError):
    """A named object (table, model, stream, job, pipeline) does not exist."""
