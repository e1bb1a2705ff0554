"""The model registry: versions with metrics, feature schema and training range; stages.

Artifacts live in the model store (:mod:`sluice.models.artifact_store`: an object store
when the lake is on one or ``SLUICE_MODELS_URL`` is set, else ``SLUICE_HOME/models``) under
``<name>/v<version>/``, with their digest; the index (versions, stages, metrics) lives in the
metadata DB so several processes (replicas) agree on what is in production. Stages:
``candidate`` → ``production``; the previous production version becomes ``archived`` and
``rollback`` brings it back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Column, DateTime, Integer, String, Table, Text, and_, insert, select, update

from sluice.core.errors import ModelError, NotFoundError
from sluice.core.settings import Settings
from sluice.models.artifact_store import ArtifactStore
from sluice.storage.db import METADATA, ensure_tables, get_engine
from sluice.storage.upsert import upsert

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$")

model_versions = Table(
    "model_versions",
    METADATA,
    Column("name", String(100), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("stage", String(20), nullable=False),
    Column("format", String(40), nullable=False),
    Column("artifact", String(400), nullable=False),
    Column("features", Text, nullable=False),
    Column("metrics", Text, nullable=False),
    Column("params", Text, nullable=False),
    Column("data_range", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("promoted_at", DateTime(timezone=True)),
    Column("digest", String(64)),
)


@dataclass
class ModelVersion:
    """One registered version of a model."""

    name: str
    version: int
    stage: str
    format: str
    artifact: Path
    features: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    data_range: dict[str, Any] | None = None
    created_at: datetime | None = None
    promoted_at: datetime | None = None
    location: str = ""  # where the store keeps it (a path relative to the folder, or a URL)
    digest: str | None = None  # SHA-256 of the artifact, checked on load

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {
            "name": self.name,
            "version": self.version,
            "stage": self.stage,
            "format": self.format,
            "features": self.features,
            "metrics": self.metrics,
            "params": self.params,
            "data_range": self.data_range,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "promoted_at": self.promoted_at.isoformat() if self.promoted_at else None,
        }


def check_name(name: str) -> str:
    """Validate a model name (it becomes a folder name)."""
    if not _NAME.match(name):
        raise ModelError(f"invalid model name {name!r}: use letters, digits, '.', '_' and '-'")
    return name


class ModelRegistry:
    """Registers, lists, promotes and rolls back model versions."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.models_dir
        self.store = ArtifactStore(settings)
        self.engine = get_engine(str(settings.metadata_url))
        ensure_tables(self.engine, "model_versions")

    def register(
        self,
        name: str,
        fmt: str,
        artifact: Path,
        *,
        features: list[str],
        metrics: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        data_range: dict[str, Any] | None = None,
        stage: str = "candidate",
    ) -> ModelVersion:
        """Copy ``artifact`` into the registry as the next version of ``name``."""
        check_name(name)
        with self.engine.begin() as conn:
            last = conn.execute(
                select(model_versions.c.version)
                .where(model_versions.c.name == name)
                .order_by(model_versions.c.version.desc())
            ).scalar()
            version = (last or 0) + 1
            location, digest = self.store.put(artifact, name, version)
            conn.execute(
                insert(model_versions).values(
                    name=name,
                    version=version,
                    stage="candidate",
                    format=fmt,
                    artifact=location,
                    digest=digest,
                    features=json.dumps(features),
                    metrics=json.dumps(metrics or {}, default=float),
                    params=json.dumps(params or {}, default=str),
                    data_range=json.dumps(data_range, default=str) if data_range else None,
                    created_at=datetime.now(UTC),
                )
            )
        if stage == "production":
            self.promote(name, version)
        return self.get(name, version)

    def _row(self, row: Any) -> ModelVersion:
        return ModelVersion(
            name=row.name,
            version=row.version,
            stage=row.stage,
            format=row.format,
            artifact=self.store.local_path(row.artifact),
            features=json.loads(row.features),
            metrics=json.loads(row.metrics),
            params=json.loads(row.params),
            data_range=json.loads(row.data_range) if row.data_range else None,
            created_at=row.created_at,
            promoted_at=row.promoted_at,
            location=row.artifact,
            digest=row.digest,
        )

    def list(self, name: str | None = None) -> list[ModelVersion]:
        """Every version (of ``name``), newest first."""
        query = select(model_versions).order_by(
            model_versions.c.name, model_versions.c.version.desc()
        )
        if name:
            query = query.where(model_versions.c.name == name)
        with self.engine.connect() as conn:
            return [self._row(r) for r in conn.execute(query)]

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        """One version; without ``version`` the production one (else the newest)."""
        versions = self.list(name)
        if not versions:
            raise NotFoundError(f"no model named {name!r} in the registry")
        if version is None:
            prod = [v for v in versions if v.stage == "production"]
            return prod[0] if prod else versions[0]
        for v in versions:
            if v.version == version:
                return v
        raise NotFoundError(f"model {name!r} has no version {version}")

    def fetch(self, version: ModelVersion) -> Path:
        """The verified local copy of ``version``'s artifact (downloaded from the store)."""
        return self.store.get(version.location, version.digest)

    def production(self, name: str) -> ModelVersion | None:
        """The production version of ``name``, if any."""
        return next((v for v in self.list(name) if v.stage == "production"), None)

    def promote(self, name: str, version: int) -> ModelVersion:
        """Make ``version`` the production version; the previous one is archived."""
        self.get(name, version)
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            conn.execute(
                update(model_versions)
                .where(and_(model_versions.c.name == name, model_versions.c.stage == "production"))
                .values(stage="archived")
            )
            conn.execute(
                update(model_versions)
                .where(and_(model_versions.c.name == name, model_versions.c.version == version))
                .values(stage="production", promoted_at=now)
            )
        return self.get(name, version)

    def rollback(self, name: str) -> ModelVersion:
        """Return to the most recently archived production version."""
        current = self.production(name)
        archived = [
            v
            for v in self.list(name)
            if v.stage == "archived"
            and v.promoted_at
            and (current is None or v.version != current.version)
        ]
        if not archived:
            raise ModelError(f"model {name!r} has no earlier production version to roll back to")
        previous = max(archived, key=lambda v: v.promoted_at or datetime.min.replace(tzinfo=UTC))
        if current is not None:
            with self.engine.begin() as conn:
                conn.execute(
                    update(model_versions)
                    .where(
                        and_(
                            model_versions.c.name == name,
                            model_versions.c.version == current.version,
                        )
                    )
                    .values(stage="candidate")
                )
        return self.promote(name, previous.version)

    def resolve_artifact(self, path: str | Path) -> Path:
        """Resolve a user-given model path; it must lie under the model directory."""
        candidate = Path(path)
        if not candidate.is_absolute():
            candidate = self.root / candidate
        resolved = candidate.resolve()
        if not resolved.is_relative_to(self.root.resolve()):
            raise ModelError(
                f"model file {str(path)!r} is outside the model directory "
                f"{self.root}; copy it there (pickle-based formats run code when "
                "loaded, so Sluice only loads them from there)"
            )
        if not resolved.exists():
            raise ModelError(f"model file {str(path)!r} does not exist under {self.root}")
        return resolved


online_models = Table(
    "online_models",
    METADATA,
    Column("name", String(100), primary_key=True),
    Column("pipeline", String(200), nullable=False),
    Column("type", String(40), nullable=False),
    Column("features", Text, nullable=False),
    Column("key", String(200)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


@dataclass
class OnlineModelInfo:
    """An online model living inside a pipeline (its state is in the pipeline's checkpoint)."""

    name: str
    pipeline: str
    type: str
    features: list[str]
    key: str | None


class OnlineModelIndex:
    """Which pipeline runs which online model, so predict and the API can find its state."""

    def __init__(self, settings: Settings) -> None:
        self.engine = get_engine(str(settings.metadata_url))
        ensure_tables(self.engine, "online_models")

    def record(self, info: OnlineModelInfo) -> None:
        """Insert or update the entry for ``info.name``."""
        values = {
            "pipeline": info.pipeline,
            "type": info.type,
            "features": json.dumps(info.features),
            "key": info.key,
            "updated_at": datetime.now(UTC),
        }
        with self.engine.begin() as conn:
            upsert(conn, online_models, {"name": info.name, **values}, ["name"])

    def list(self) -> list[OnlineModelInfo]:
        """Every online model, by name."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(online_models).order_by(online_models.c.name)).all()
        return [
            OnlineModelInfo(r.name, r.pipeline, r.type, json.loads(r.features), r.key) for r in rows
        ]

    def get(self, name: str) -> OnlineModelInfo | None:
        """The entry for ``name``, if any."""
        return next((m for m in self.list() if m.name == name), None)
