"""The conformance suite's plugin table: how to build a minimal instance of each plugin.

Every source, sink and model registered in the plugin registry (built-ins and ``sluice.*``
entry points) is discovered here, never listed by hand; the tests are parametrised over that
discovery. What a plugin needs to be built for a test (data written or produced, a service,
an artifact) is one entry in ``SOURCES``, ``SINKS`` or ``MODELS`` below; a newly registered
plugin without an entry fails ``test_coverage.py`` with a message naming the table to extend.

Services come from fixtures keyed by plugin name (``SERVICES``): Kafka from the session's
tansu broker, PostgreSQL from a throw-away database, S3 from the session's moto server,
MQTT from the machine's Mosquitto.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from sluice.core.plugins import available
from sluice.models.base import BUILTIN_MODELS
from sluice.sinks.base import BUILTIN_SINKS
from sluice.sources.base import BUILTIN_SOURCES

REGISTERED_SOURCES = available("sources", BUILTIN_SOURCES)
REGISTERED_SINKS = available("sinks", BUILTIN_SINKS)
REGISTERED_MODELS = available("models", BUILTIN_MODELS)
PIPELINE = "conf"


def record(i: int) -> bytes:
    """The ``i``-th good record: a JSON object with an id and a value."""
    return json.dumps({"id": i, "v": i / 4}).encode()


BAD = b"{not json"
SCHEMA = {"id": "long", "v": "double"}


# -- sources ---------------------------------------------------------------------------------
@dataclass
class SourceCase:
    """Writes ``good`` records (ids ``start..``) then ``bad`` unparseable ones; its config."""

    config: Callable[[int, int, int], dict[str, Any]]
    schema: Callable[[int], dict[str, Any] | None] = lambda _bad: SCHEMA
    grows: bool = True  # more records can be written after a run (not the generator)


def _file_case(home: Path, services: dict[str, Any]) -> SourceCase:
    folder = home.parent / f"in-{uuid.uuid4().hex[:6]}"
    folder.mkdir()

    def config(good: int, bad: int, start: int = 0) -> dict[str, Any]:
        # A finished file is read once: more records arrive as a new file of the glob.
        lines = [record(i) for i in range(start, start + good)] + [BAD] * bad
        part = folder / f"part-{len(list(folder.iterdir())):03d}.jsonl"
        part.write_bytes(b"".join(line + b"\n" for line in lines))
        return {"type": "file", "path": str(folder / "*.jsonl"), "format": "json"}

    return SourceCase(config)


def _log_case(home: Path, services: dict[str, Any]) -> SourceCase:
    from sluice.core.settings import Settings
    from sluice.storage.log import open_log

    stream = f"s{uuid.uuid4().hex[:6]}"

    def config(good: int, bad: int, start: int = 0) -> dict[str, Any]:
        payloads = [record(i) for i in range(start, start + good)] + [BAD] * bad
        open_log(Settings(home=home).log_dir).append(stream, payloads)
        return {"type": "log", "stream": stream}

    return SourceCase(config)


def _kafka_case(home: Path, services: dict[str, Any]) -> SourceCase:
    from confluent_kafka import Producer

    from tests.kafka_broker import new_topic

    bootstrap = services["kafka"]
    topic = new_topic(bootstrap)

    def config(good: int, bad: int, start: int = 0) -> dict[str, Any]:
        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        for value in [record(i) for i in range(start, start + good)] + [BAD] * bad:
            producer.produce(topic, value)
        assert producer.flush(30) == 0
        return {"type": "kafka", "topic": topic, "bootstrap_servers": bootstrap}

    return SourceCase(config)


def _generator_case(home: Path, services: dict[str, Any]) -> SourceCase:
    def config(good: int, bad: int, start: int = 0) -> dict[str, Any]:
        assert start == 0, "the generator's rows are fixed by its options"
        return {"type": "generator", "events": good + bad, "devices": 2, "seed": 3}

    def schema(bad: int) -> dict[str, Any] | None:
        # The generator's rows are typed and always well-formed: "bad" rows are rows that
        # miss a required column of the pipeline's schema.
        if not bad:
            return None
        return {"device_id": "string", "absent": {"type": "double", "required": True}}

    return SourceCase(config, schema, grows=False)


def _sql_case(home: Path, services: dict[str, Any]) -> SourceCase:
    import psycopg

    url = services["postgres"]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (seq bigserial PRIMARY KEY, id bigint, v text)")

    def config(good: int, bad: int, start: int = 0) -> dict[str, Any]:
        # Bad rows hold a v that is no double: the decode stage dead-letters them.
        rows = [(i, str(i / 4)) for i in range(start, start + good)]
        rows += [(None, BAD.decode())] * bad
        with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO events (id, v) VALUES (%s, %s)", rows)
        return {
            "type": "sql",
            "url": url,
            "table": "events",
            "cursor": "seq",
            "poll_interval": "50ms",
        }

    return SourceCase(config)


def _mqtt_case(home: Path, services: dict[str, Any]) -> SourceCase:
    from tests.mqtt_broker import create_session, publish

    topic = f"conf/{uuid.uuid4().hex[:8]}/events"
    client_id = f"conf-{uuid.uuid4().hex[:8]}-{{pipeline}}"
    # MQTT keeps messages only for sessions that exist when they are published: open the
    # sessions of the pipelines the checks run (protocol checks use PIPELINE) beforehand.
    for pipeline in (PIPELINE, "whole", "pieces"):
        create_session(client_id.replace("{pipeline}", pipeline), topic)

    def config(good: int, bad: int, start: int = 0) -> dict[str, Any]:
        publish(topic, [record(i) for i in range(start, start + good)] + [BAD] * bad)
        return {
            "type": "mqtt",
            "url": services["mqtt"],
            "topic": topic,
            "client_id": client_id,
            "session_expiry": "10m",
        }

    return SourceCase(config)


def _http_case(home: Path, services: dict[str, Any]) -> SourceCase:
    api = services["http"]

    def config(good: int, bad: int, start: int = 0) -> dict[str, Any]:
        # An NDJSON feed paged by offset: bad lines are dead-lettered by the decode stage.
        api.add([record(i) for i in range(start, start + good)] + [BAD] * bad)
        return {
            "type": "http",
            "url": api.url,
            "format": "ndjson",
            "pagination": {"type": "offset", "param": "offset"},
            "poll_interval": "50ms",
        }

    return SourceCase(config)


SOURCES: dict[str, Callable[[Path, dict[str, Any]], SourceCase]] = {
    "file": _file_case,
    "log": _log_case,
    "kafka": _kafka_case,
    "generator": _generator_case,
    "sql": _sql_case,
    "mqtt": _mqtt_case,
    "http": _http_case,
}
# The services a source plugin needs, by plugin name (see ``services_for``).
SOURCE_SERVICES = {"kafka": ("kafka",), "sql": ("postgres",), "mqtt": ("mqtt",), "http": ("http",)}


# -- sinks -------------------------------------------------------------------------------------
@dataclass
class SinkCase:
    """A sink's config and a way to count the rows it holds."""

    config: dict[str, Any]
    count: Callable[[], int]


def _lake_case(home: Path, services: dict[str, Any]) -> SinkCase:
    from sluice.core.settings import Settings
    from sluice.storage.lake_tables import open_delta

    table = f"{services['s3']}/out" if "s3" in services else "out"

    def count() -> int:
        delta = open_delta(Settings(home=home).lake_path(table))
        return 0 if delta is None else delta.to_pyarrow_table().num_rows

    return SinkCase({"type": "lake", "table": table}, count)


def _duckdb_count(path: Path) -> int:
    import duckdb

    if not path.exists():
        return 0
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = {row[0] for row in con.execute("SHOW TABLES").fetchall()}
        if "out" not in tables:
            return 0
        found = con.execute("SELECT count(*) FROM out").fetchone()
        return int(found[0]) if found else 0
    finally:
        con.close()


def _warehouse_case(home: Path, services: dict[str, Any]) -> SinkCase:
    url = services.get("postgres")
    if url is None:
        path = home.parent / "warehouse.duckdb"
        return SinkCase(
            {"type": "warehouse", "table": "out", "url": str(path)}, lambda: _duckdb_count(path)
        )

    def count() -> int:
        import psycopg

        with psycopg.connect(url) as conn:
            exists = conn.execute("SELECT to_regclass('public.out')").fetchone()
            if not exists or exists[0] is None:
                return 0
            found = conn.execute("SELECT count(*) FROM public.out").fetchone()
            return int(found[0]) if found else 0

    return SinkCase({"type": "warehouse", "table": "out", "url": url}, count)


def _kafka_sink_case(home: Path, services: dict[str, Any]) -> SinkCase:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    from tests.kafka_broker import new_topic

    bootstrap = services["kafka"]
    topic = new_topic(bootstrap)

    def count() -> int:  # the topic has one partition: read it to its end
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "conformance-count",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        seen, deadline = 0, time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                message = consumer.poll(1.0)
                if message is None:
                    continue
                error = message.error()
                if error is None:
                    seen += 1
                elif error.code() == KafkaError._PARTITION_EOF:
                    return seen
            raise AssertionError(f"topic {topic} was not read to its end")
        finally:
            consumer.close()

    return SinkCase({"type": "kafka", "topic": topic, "bootstrap_servers": bootstrap}, count)


SINKS: dict[str, Callable[[Path, dict[str, Any]], SinkCase]] = {
    "lake": _lake_case,
    "warehouse": _warehouse_case,
    "kafka": _kafka_sink_case,
}
# Variants run the same checks once per backend: ``lake`` on local files and on S3 (moto),
# ``warehouse`` on DuckDB and on PostgreSQL.
SINK_VARIANTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "lake": ((), ("s3",)),
    "warehouse": ((), ("postgres",)),
    "kafka": (("kafka",),),
}


# -- models ------------------------------------------------------------------------------------
FEATURES = ["a", "b", "c"]


def model_table(rows: int = 240, seed: int = 7) -> pa.Table:
    """Small numeric (a, b, c), key and text columns with a few outliers."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 3))
    X[rows // 2 :: 37] += 8.0
    words = ["printer jammed paper", "password reset login", "invoice refund payment"]
    return pa.table(
        {
            "device": [f"d{i % 2}" for i in range(rows)],
            "a": X[:, 0],
            "b": X[:, 1],
            "c": X[:, 2],
            "text": [f"{words[i % 3]} ticket {i % 5}" for i in range(rows)],
        }
    )


def _training_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int)


def _joblib(models: Path, estimator: Any) -> str:
    import joblib

    joblib.dump(estimator, models / "model.joblib")
    return "model.joblib"


def _sklearn_artifact(models: Path) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    X, y = _training_data()
    return {"path": _joblib(models, LogisticRegression().fit(X, y)), "features": FEATURES}


def _iforest_artifact(models: Path) -> dict[str, Any]:
    from sklearn.ensemble import IsolationForest

    X, _ = _training_data()
    forest = IsolationForest(n_estimators=20, random_state=0).fit(X)
    return {"path": _joblib(models, forest), "features": FEATURES}


def _onnx_artifact(models: Path) -> dict[str, Any]:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    X, y = _training_data()
    onx = to_onnx(
        LogisticRegression().fit(X, y), X[:1].astype(np.float32), options={"zipmap": False}
    )
    (models / "model.onnx").write_bytes(onx.SerializeToString())
    return {"path": "model.onnx", "features": FEATURES}


def _torch_artifact(models: Path) -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    example = (torch.zeros(4, 3),)
    program = torch.export.export(net, example, dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(models / "net.pt2"))
    return {"path": "net.pt2", "features": FEATURES, "classes": ["x", "y"]}


def _keras_artifact(models: Path) -> dict[str, Any]:
    from sluice.models.keras_models import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    with warnings.catch_warnings():  # keras's torch backend trips a numpy 2 deprecation on save
        warnings.simplefilter("ignore", DeprecationWarning)
        net.save(str(models / "model.keras"))
    return {"path": "model.keras", "features": FEATURES, "labels": ["x", "y"]}


def _tensorflow_artifact(models: Path) -> dict[str, Any]:
    options = {"path": "saved", "features": FEATURES}
    if _needs("tensorflow", "absent"):
        return options  # only construction runs: it opens no artifact
    import tensorflow as tf

    class Net(tf.Module):
        def __init__(self) -> None:
            self.w = tf.Variable(tf.random.stateless_normal((3, 2), seed=(1, 2)))

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
        def serve(self, x: Any) -> Any:
            return {"probabilities": tf.nn.softmax(tf.matmul(x, self.w))}

    net = Net()
    tf.saved_model.save(net, str(models / "saved"), signatures={"serving_default": net.serve})
    return options


def _autoencoder_artifact(models: Path) -> dict[str, Any]:
    from sluice.models.autoencoder import fit_autoencoder

    X, _ = _training_data()
    path, params = fit_autoencoder(X, models, epochs=2)
    return {"path": path.name, "features": FEATURES, "threshold": params["threshold"]}


def _text_artifact(models: Path) -> dict[str, Any]:
    from sluice.models.text import build_text_pipeline

    table = model_table(60)
    texts = table.column("text").to_pylist()
    labels = [t.split()[0] for t in texts]
    return {"path": _joblib(models, build_text_pipeline().fit(texts, labels)), "text": "text"}


@dataclass
class ModelCase:
    """How to build a model: its options (after writing any artifact), or why it cannot run."""

    options: Callable[[Path], dict[str, Any]]
    unavailable: str | None = None  # why scoring checks cannot run here (construction still does)


def _needs(module: str, why: str) -> str | None:
    import importlib.util

    return None if importlib.util.find_spec(module) is not None else why


MODELS: dict[str, ModelCase] = {
    "online_anomaly": ModelCase(lambda _m: {"features": FEATURES, "warmup": 20}),
    "sklearn": ModelCase(_sklearn_artifact),
    "isolation_forest": ModelCase(_iforest_artifact),
    "onnx": ModelCase(_onnx_artifact),
    "torch": ModelCase(_torch_artifact),
    "autoencoder": ModelCase(_autoencoder_artifact),
    "text_classifier": ModelCase(_text_artifact),
    "keras": ModelCase(_keras_artifact),
    "tensorflow": ModelCase(
        _tensorflow_artifact,
        _needs("tensorflow", "tensorflow-cpu (sluice[tensorflow]) is not in the dev environment"),
    ),
}


def table_entry(table: dict[str, Any], name: str, kind: str) -> Any:
    """``table[name]``, or a failure saying where a new plugin's entry belongs."""
    if name not in table:
        pytest.fail(
            f"{kind} plugin {name!r} is registered but has no entry in "
            f"tests/conformance/conftest.py {kind.upper()}S: add how to build a minimal instance"
        )
    return table[name]


# -- services ---------------------------------------------------------------------------------
def services_for(request: pytest.FixtureRequest, needs: tuple[str, ...]) -> dict[str, Any]:
    """The services a plugin needs, from fixtures keyed by name (fail under CI if missing)."""
    found: dict[str, Any] = {}
    if "kafka" in needs:
        found["kafka"] = request.getfixturevalue("kafka_broker")
    if "postgres" in needs:
        from tests.postgres import SERVER, create_database, drop_databases

        name = create_database("conf")
        request.addfinalizer(lambda: drop_databases(name))
        found["postgres"] = f"{SERVER}/{name}"
    if "mqtt" in needs:
        from tests.mqtt_broker import require_mosquitto

        found["mqtt"] = require_mosquitto()
    if "http" in needs:
        from tests.http_api import Api, serve

        context = serve(Api(mode="offset", limit=7, fmt="ndjson"))
        found["http"] = context.__enter__()
        request.addfinalizer(lambda: context.__exit__(None, None, None))
    if "s3" in needs:
        server = request.getfixturevalue("moto_s3_server")
        monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
        monkeypatch.setenv("AWS_S3_ALLOW_UNSAFE_RENAME", "true")
        found["s3"] = f"s3://{server.bucket()}"
    return found


# -- the no-I/O guard ------------------------------------------------------------------------
def tree(root: Path) -> set[str]:
    """Every path under ``root`` (empty when it does not exist)."""
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


@contextmanager
def no_io(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail if the block connects a socket, starts a thread or changes files under ``root``."""

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("construction opened a network connection")

    before, threads = tree(root), threading.active_count()
    with monkeypatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket.socket, "connect_ex", refuse)
        yield
    assert tree(root) == before, "construction changed files"
    assert threading.active_count() == threads, "construction started a thread"
