"""Arrow readers for SQL databases: one query in, one Arrow table out, no per-row Python.

* PostgreSQL (``postgresql://``, ``postgres://``): the ADBC libpq driver, which reads
  results with ``COPY ... TO STDOUT (FORMAT binary)`` straight into Arrow buffers.
* SQLite (``sqlite:///relative.db``, ``sqlite:////absolute.db``): the ADBC SQLite driver,
  opened read-only.
* MySQL and MariaDB (``mysql://``, ``mariadb://``): ConnectorX (Rust, Arrow-native); it
  connects per query, which costs milliseconds against batches of many thousand rows.

Failures that a retry may cure (connection refused, dropped, timed out) raise
``TransientSourceError``; others (a syntax error, an unknown table) ``SourceError``.
Messages never hold the URL's password.
"""

from __future__ import annotations

import contextlib
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa

from sluice.connectors.warehouse import redact_url
from sluice.core.deps import require
from sluice.core.errors import ConfigError, SourceError, TransientSourceError

DIALECTS = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "sqlite": "sqlite",
}
_TRANSIENT = re.compile(
    r"connect|refused|timed? ?out|broken pipe|reset by peer|server closed|lost connection|"
    r"gone away|terminat|shutting down|could not receive|no route|unreachable|i/o error",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class SqlUrl:
    """A database URL: its dialect, what the driver takes, and a printable form."""

    dialect: str  # postgresql | mysql | sqlite
    target: str
    shown: str
    secret: str | None

    def scrub(self, text: str) -> str:
        """``text`` with the password (if any) replaced by ``***``."""
        return text.replace(self.secret, "***") if self.secret else text


def parse_sql_url(url: str) -> SqlUrl:
    """Check ``url`` and say which dialect it speaks (no connection is made)."""
    scheme = url.partition("://")[0].lower()
    dialect = DIALECTS.get(scheme.split("+")[0])
    if "://" not in url or dialect is None:
        raise ConfigError(
            "url must start with postgresql://, mysql://, mariadb:// or sqlite:///"
            f" (got {redact_url(url)!r})",
            key="source.url",
        )
    if dialect == "sqlite":
        path = url.partition("://")[2].removeprefix("/")
        if not path:
            raise ConfigError("a sqlite url needs a file: sqlite:///data.db", key="source.url")
        return SqlUrl(dialect, f"file:{path}?mode=ro", url, None)
    secret = urlsplit(url).password
    target = url if dialect == "postgresql" else "mysql://" + url.partition("://")[2]
    if dialect == "postgresql" and scheme != "postgresql":
        target = "postgresql://" + url.partition("://")[2]
    return SqlUrl(dialect, target, redact_url(url), secret)


def quote_name(name: str, dialect: str) -> str:
    """Quote a (possibly ``schema.table``) identifier for ``dialect``."""
    mark = "`" if dialect == "mysql" else '"'
    return ".".join(mark + part.replace(mark, mark * 2) + mark for part in name.split("."))


def literal(value: Any, dialect: str) -> str:
    """A SQL literal for a cursor value (a JSON scalar: number or text)."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("'", "''")
    if dialect == "mysql":
        text = text.replace("\\", "\\\\")
    return f"'{text}'"


class ArrowReader(ABC):
    """Runs queries against one database and returns Arrow tables."""

    def __init__(self, url: SqlUrl) -> None:
        self.url = url

    @abstractmethod
    def read(self, sql: str) -> pa.Table:
        """The whole result of ``sql`` as an Arrow table."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Drop the connection (the next ``read`` reconnects)."""

    def fail(self, exc: BaseException, sql: str) -> SourceError:
        """The error to raise for ``exc``: transient when a reconnect may help."""
        message = self.url.scrub(" ".join(str(exc).split()))
        text = f"{self.url.shown}: {message}"
        if _TRANSIENT.search(message):
            return TransientSourceError(text)
        return SourceError(f"{text} (query: {self.url.scrub(sql)[:300]})")


class AdbcReader(ArrowReader):
    """PostgreSQL or SQLite through ADBC's low-level API (autocommit; no pandas import)."""

    def __init__(self, url: SqlUrl) -> None:
        super().__init__(url)
        self._handles: list[Any] = []  # database, connection

    def _connection(self) -> Any:
        if not self._handles:
            manager = require("adbc_driver_manager", "sql", "the SQL source")
            if self.url.dialect == "postgresql":
                driver = require("adbc_driver_postgresql", "sql", "the PostgreSQL source")
            else:
                driver = require("adbc_driver_sqlite", "sql", "the SQLite source")
            database = driver.connect(self.url.target)
            self._handles = [database]
            self._handles.append(manager.AdbcConnection(database))
        return self._handles[-1]

    def read(self, sql: str) -> pa.Table:
        """Run ``sql`` on the (re)opened connection."""
        manager = require("adbc_driver_manager", "sql", "the SQL source")
        try:
            statement = manager.AdbcStatement(self._connection())
            try:
                statement.set_sql_query(sql)
                stream, _ = statement.execute_query()
                table = pa.RecordBatchReader._import_from_c(stream.address).read_all()
            finally:
                statement.close()
            return table
        except manager.Error as exc:
            self.close()
            raise self.fail(exc, sql) from None

    def close(self) -> None:
        """Close the connection and the database handle."""
        handles, self._handles = self._handles, []
        for handle in reversed(handles):
            with contextlib.suppress(Exception):  # a dead connection may fail to close
                handle.close()


class ConnectorXReader(ArrowReader):
    """MySQL or MariaDB through ConnectorX (a connection per query)."""

    def read(self, sql: str) -> pa.Table:
        """Run ``sql``."""
        cx = require("connectorx", "sql", "the MySQL/MariaDB source")
        try:
            table: pa.Table = cx.read_sql(self.url.target, sql, return_type="arrow")
        except (RuntimeError, OSError, ValueError) as exc:
            raise self.fail(exc, sql) from None
        return table


def open_reader(url: SqlUrl) -> ArrowReader:
    """The reader for ``url``'s dialect (connects on first ``read``)."""
    if url.dialect == "mysql":
        return ConnectorXReader(url)
    return AdbcReader(url)
