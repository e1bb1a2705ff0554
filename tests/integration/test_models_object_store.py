"""Model versions live in the object store: a second home serves what the first promoted.

Two ``SLUICE_HOME`` folders share one PostgreSQL metadata DB and one S3 lake (a moto
server), as two replicas of a deployment do; nothing on one home's disk is visible to the
other.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from sqlalchemy import update

from sluice.core.errors import ModelError
from sluice.core.settings import Settings
from sluice.models.artifact_store import artifact_digest
from sluice.models.predict import Predictor
from sluice.models.registry import ModelRegistry, model_versions
from sluice.models.train import TrainSpec, train
from sluice.sinks.base import SinkContext
from sluice.sinks.lake import write_lake_table
from sluice.storage.db import dispose_all, get_engine
from tests.kafka_broker import MotoS3
from tests.postgres import SERVER, temporary_database

pytestmark = pytest.mark.slow


@dataclass
class Deployment:
    """Two homes sharing a metadata DB and an S3 lake."""

    first: Settings
    second: Settings
    bucket: str

    def home(self, path: Path) -> Settings:
        """Another replica's settings (same DB and lake, its own disk)."""
        return Settings(
            home=path, metadata_url=self.first.metadata_url, lake_root=self.first.lake_root
        )


@pytest.fixture
def deployment(
    moto_s3_server: MotoS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    """Homes ``a`` and ``b`` on one PostgreSQL database and one moto bucket."""
    for key, value in moto_s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_s3_server.url)
    monkeypatch.setenv("AWS_S3_ALLOW_UNSAFE_RENAME", "true")
    monkeypatch.delenv("SLUICE_MODELS_URL", raising=False)
    bucket = moto_s3_server.bucket()
    with temporary_database("models") as name:
        url, lake = f"{SERVER}/{name}", f"s3://{bucket}/lake"
        first = Settings(home=tmp_path / "a", metadata_url=url, lake_root=lake)
        second = Settings(home=tmp_path / "b", metadata_url=url, lake_root=lake)
        try:
            yield Deployment(first, second, bucket)
        finally:
            dispose_all()


def _train_and_promote(settings: Settings) -> int:
    rng = np.random.default_rng(7)
    data = pa.table({"x": rng.normal(size=300), "y": rng.normal(size=300)})
    write_lake_table(SinkContext("seed", settings), "metrics", data, epoch=1)
    version = train(
        settings,
        TrainSpec(
            "detector", "isolation_forest", "metrics", ["x", "y"], params={"n_estimators": 20}
        ),
    )
    ModelRegistry(settings).promote("detector", version.version)
    return version.version


def test_second_home_serves_the_model_promoted_from_the_first(deployment: Deployment) -> None:
    version = _train_and_promote(deployment.first)
    stored = ModelRegistry(deployment.second).get("detector")
    assert (stored.version, stored.stage) == (version, "production")
    assert stored.location == f"s3://{deployment.bucket}/lake/_models/detector/v1/model.joblib"
    s3, path = pafs.FileSystem.from_uri(stored.location)
    assert s3.get_file_info(path).type == pafs.FileType.File
    assert not (deployment.second.models_dir).exists()

    predictor = Predictor(deployment.second)
    near = predictor.predict({"x": 0.1, "y": -0.2}, model="detector")
    assert (near["model"], near["version"]) == ("detector", version)
    far = predictor.predict({"x": 40.0, "y": -40.0}, model="detector")["prediction"]
    assert far["anomaly"] is True and far["score"] > near["prediction"]["score"]
    copy = deployment.second.models_dir / "detector" / "v1" / "model.joblib"
    assert artifact_digest(copy) == stored.digest


def test_a_tampered_artifact_is_refused(deployment: Deployment, tmp_path: Path) -> None:
    _train_and_promote(deployment.first)
    stored = ModelRegistry(deployment.first).get("detector")
    s3, path = pafs.FileSystem.from_uri(stored.location)
    with s3.open_output_stream(path) as out:
        out.write(b"not the registered bytes")
    with pytest.raises(ModelError, match="does not match the digest"):
        Predictor(deployment.home(tmp_path / "c")).predict({"x": 0.0, "y": 0.0}, model="detector")


def test_a_location_outside_the_store_is_never_loaded(
    deployment: Deployment, tmp_path: Path
) -> None:
    _train_and_promote(deployment.first)
    engine = get_engine(str(deployment.first.metadata_url))
    with engine.begin() as conn:
        conn.execute(
            update(model_versions).values(artifact="s3://elsewhere/detector/v1/model.joblib")
        )
    with pytest.raises(ModelError, match="outside the model store"):
        Predictor(deployment.home(tmp_path / "c")).predict({"x": 0.0, "y": 0.0}, model="detector")


def test_local_registry_checks_the_digest_too(settings: Settings, tmp_path: Path) -> None:
    artifact = tmp_path / "model.bin"
    artifact.write_bytes(b"weights")
    registry = ModelRegistry(settings)
    version = registry.register("plain", "sklearn", artifact, features=["x"])
    assert version.location == "plain/v1/model.bin"
    assert registry.fetch(version) == settings.models_dir / "plain" / "v1" / "model.bin"
    (settings.models_dir / "plain" / "v1" / "model.bin").write_bytes(b"changed")
    with pytest.raises(ModelError, match="changed since it was registered"):
        registry.fetch(version)
