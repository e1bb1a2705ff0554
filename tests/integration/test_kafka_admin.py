"""``ensure_topic`` against the tansu broker: partitions, topic configs, fresh interpreters."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from sluice.connectors.kafka import ensure_topic
from tests.kafka_broker import kafka_broker_fixture  # noqa: F401

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]
SRC = Path(__file__).resolve().parents[2] / "src"


def test_creates_the_topic_once_with_its_partitions_and_config(kafka_broker: str) -> None:
    topic = f"admin-{uuid.uuid4().hex[:8]}"
    assert ensure_topic(kafka_broker, topic, 3, topic_config={"retention.ms": "-1"}) is True
    assert ensure_topic(kafka_broker, topic, 3) is False
    admin = AdminClient({"bootstrap.servers": kafka_broker})
    assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 3
    [future] = admin.describe_configs([ConfigResource("topic", topic)]).values()
    assert future.result(10)["retention.ms"].value == "-1"


def test_works_in_an_interpreter_that_never_imported_the_admin_module(kafka_broker: str) -> None:
    topic = f"admin-{uuid.uuid4().hex[:8]}"
    code = (
        "import sys; from sluice.connectors.kafka import ensure_topic; "
        "print(ensure_topic(sys.argv[1], sys.argv[2], 2))"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", code, kafka_broker, topic],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
