"""Where Sluice keeps its state: ``SLUICE_HOME`` and the documented environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sluice.core.errors import ConfigError


@dataclass(frozen=True)
class Settings:
    """Resolved locations of the metadata DB, lake, warehouse, model registry and log.

    Every value comes from one explicit place: the argument, else the environment
    variable named beside it, else a path under ``SLUICE_HOME`` (default ``./.sluice``).
    """

    home: Path = field(default_factory=lambda: Path(os.environ.get("SLUICE_HOME", ".sluice")))
    metadata_url: str | None = None  # SLUICE_METADATA_URL
    lake_root: str | None = None  # SLUICE_LAKE_URL (a path or s3://bucket/prefix)
    warehouse_url: str | None = None  # SLUICE_WAREHOUSE_URL (duckdb path or postgresql://)
    # SLUICE_MODELS_URL: where model versions are stored; default <lake>/_models when the lake
    # is on an object store, else "" (the local folder SLUICE_HOME/models)
    models_url: str | None = None
    # memory and spill-to-disk limits of one SQL query (sluice query, the API, jobs)
    query_memory_limit: str = field(
        default_factory=lambda: os.environ.get("SLUICE_QUERY_MEMORY_LIMIT") or "1GB"
    )
    query_temp_limit: str = field(
        default_factory=lambda: os.environ.get("SLUICE_QUERY_TEMP_LIMIT") or "4GB"
    )

    def __post_init__(self) -> None:
        home = Path(self.home).absolute()
        object.__setattr__(self, "home", home)
        env = os.environ
        if self.metadata_url is None:
            object.__setattr__(
                self,
                "metadata_url",
                env.get("SLUICE_METADATA_URL") or f"sqlite:///{home / 'metadata.db'}",
            )
        if self.lake_root is None:
            object.__setattr__(self, "lake_root", env.get("SLUICE_LAKE_URL") or str(home / "lake"))
        if self.warehouse_url is None:
            object.__setattr__(
                self,
                "warehouse_url",
                env.get("SLUICE_WAREHOUSE_URL") or str(home / "warehouse.duckdb"),
            )
        if self.models_url is None:
            lake = str(self.lake_root).rstrip("/")
            remote = "://" in lake and not lake.startswith("file://")
            default = f"{lake}/_models" if remote else ""
            object.__setattr__(self, "models_url", env.get("SLUICE_MODELS_URL") or default)

    @property
    def models_dir(self) -> Path:
        """Directory of the local model registry."""
        return self.home / "models"

    @property
    def log_dir(self) -> Path:
        """Directory of the embedded durable log."""
        return self.home / "log"

    def ensure(self) -> Settings:
        """Create the home directory if needed and return self."""
        self.home.mkdir(parents=True, exist_ok=True)
        return self

    def lake_path(self, table: str) -> str:
        """Return the location of a lake table (an absolute ``s3://`` URL passes through).

        A name with a ``..`` part is refused: it would leave the lake (or its prefix).
        """
        if ".." in table.replace("\\", "/").split("/"):
            raise ConfigError(f"lake table {table!r}: '..' is not allowed in a table name")
        if "://" in table or table.startswith("/"):
            return table
        root = str(self.lake_root).rstrip("/")
        return f"{root}/{table}"


def get_settings() -> Settings:
    """Return settings resolved from the environment now."""
    return Settings()
