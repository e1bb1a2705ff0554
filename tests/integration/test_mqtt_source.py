"""The ``mqtt`` source: broker outages, TLS with passwords, shared subscriptions, bad payloads."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sluice.config.loader import load_pipeline
from sluice.config.models import SourceConfig
from sluice.core.errors import SourceError
from sluice.core.settings import Settings
from sluice.runners.create import run
from sluice.sinks.dead_letter import read_dead_letters
from sluice.sources.base import SourceContext, create_source
from sluice.sources.mqtt import MqttSource
from tests.mqtt_broker import create_session, publish, require_mosquitto
from tests.mqtt_private import Broker, make_certificates


def payloads(first: int, last: int) -> list[bytes]:
    """JSON messages with ids ``first..last - 1``."""
    return [json.dumps({"id": i}).encode() for i in range(first, last)]


def source(options: dict[str, Any], group: str | None = None) -> MqttSource:
    """An MQTT source built from ``options``."""
    config = SourceConfig.model_validate({"type": "mqtt", "session_expiry": "10m", **options})
    built = create_source(config, SourceContext("mq", "/nonexistent", group=group))
    assert isinstance(built, MqttSource)
    return built


def ids_polled(src: MqttSource, want: int, wait: float = 30.0) -> list[int]:
    """Poll until ``want`` messages arrived (or ``wait`` passed); their ids."""
    found: list[int] = []
    deadline = time.monotonic() + wait
    while len(found) < want and time.monotonic() < deadline:
        batch = src.poll(want - len(found), 0.5)
        if batch is not None:
            found += [json.loads(raw)["id"] for raw in batch.data.column("_raw").to_pylist()]
    return found


def publish_to(port: int, topic: str, messages: list[bytes], **login: str) -> None:
    """Publish at QoS 1 to a private broker."""
    from tests.mqtt_broker import client

    publisher = client()
    if login:
        publisher.username_pw_set(login["username"], login["password"])
    publisher.connect("127.0.0.1", port)
    publisher.loop_start()
    try:
        for info in [publisher.publish(topic, m, qos=1) for m in messages]:
            info.wait_for_publish(30)
    finally:
        publisher.disconnect()
        publisher.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A private Mosquitto that a test may stop and start again."""
    folder = tmp_path / "broker"
    folder.mkdir()
    started = Broker(folder).start()
    yield started
    started.stop()


def test_a_broker_outage_loses_nothing_and_the_session_resumes(broker: Broker) -> None:
    src = source({"url": f"mqtt://127.0.0.1:{broker.port}", "topic": "t/+", "client_id": "out"})
    src.open(None)
    try:
        publish_to(broker.port, "t/a", payloads(0, 30))
        assert sorted(ids_polled(src, 10)) == list(range(10))
        src.commit({"n": src.n})  # ids 0..9 are in a committed epoch; 10..29 will not be
        assert sorted(ids_polled(src, 20)) == list(range(10, 30))
        src._round_trip(src._client)  # the acknowledgements reached the broker
        broker.stop()
        broker.start()  # same port and persistence: the session and its queue survive
        publish_to(broker.port, "t/b", payloads(30, 40))
        again = ids_polled(src, 30)
    finally:
        src.close()
    assert sorted(again) == list(range(10, 40))  # redelivered 10..29, then 30..39


def test_tls_with_a_password_and_a_wrong_password(tmp_path: Path) -> None:
    folder = tmp_path / "broker"
    folder.mkdir()
    certs = make_certificates(folder)
    tls_broker = Broker(folder, users={"sensor": "pw-ok"}, certificates=certs).start()
    try:
        options = {
            "url": f"mqtts://sensor:pw-ok@127.0.0.1:{tls_broker.port}",
            "topic": "secure/#",
            "client_id": "tls-reader",
            "tls": {"ca_file": str(certs.ca)},
        }
        src = source(options)
        src.open(None)
        try:
            from tests.mqtt_broker import client

            publisher = client()
            publisher.username_pw_set("sensor", "pw-ok")
            publisher.tls_set(ca_certs=str(certs.ca))
            publisher.connect("127.0.0.1", tls_broker.port)
            publisher.loop_start()
            publisher.publish("secure/x", b'{"id": 7}', qos=1).wait_for_publish(30)
            publisher.disconnect()
            publisher.loop_stop()
            assert ids_polled(src, 1) == [7]
        finally:
            src.close()
        wrong = source({**options, "url": f"mqtts://sensor:pw-bad@127.0.0.1:{tls_broker.port}"})
        with pytest.raises(SourceError, match="refused the session") as err:
            wrong.open(None)
        assert "pw-bad" not in str(err.value)
        wrong.close()
    finally:
        tls_broker.stop()


def test_a_shared_subscription_splits_the_messages_between_replicas() -> None:
    url = require_mosquitto()
    run_id = uuid.uuid4().hex[:8]
    topic = f"share/{run_id}/data"
    options = {"url": url, "topic": f"$share/g{run_id}/{topic}"}
    replicas = [source(options, group=f"r{i}-{run_id}") for i in range(2)]
    assert replicas[0].client_id != replicas[1].client_id
    for replica in replicas:
        replica.open(None)
    try:
        publish(topic, payloads(0, 200))
        seen: list[int] = []
        deadline = time.monotonic() + 30
        while len(seen) < 200 and time.monotonic() < deadline:
            for replica in replicas:
                batch = replica.poll(200, 0.2)
                if batch is not None:
                    seen += [json.loads(r)["id"] for r in batch.data.column("_raw").to_pylist()]
        each = [replica.n for replica in replicas]
    finally:
        for replica in replicas:
            replica.close()
    assert sorted(seen) == list(range(200))
    assert all(count > 0 for count in each), each


def test_non_utf8_and_non_json_payloads_are_dead_lettered_with_their_topic(
    tmp_path: Path, settings: Settings
) -> None:
    url = require_mosquitto()
    run_id = uuid.uuid4().hex[:8]
    client_id = f"bad-{run_id}"
    create_session(client_id, f"bad/{run_id}/#")
    publish(f"bad/{run_id}/ok", payloads(0, 3))
    publish(f"bad/{run_id}/binary", [b"\xff\xfe\x00garbage"])
    publish(f"bad/{run_id}/text", [b"temperature=21.5"])
    path = tmp_path / "bad.yaml"
    path.write_text(
        json.dumps(
            {
                "name": "badmq",
                "source": {
                    "type": "mqtt",
                    "url": url,
                    "topic": f"bad/{run_id}/#",
                    "client_id": client_id,
                    "session_expiry": "10m",
                },
                "schema": {"id": "long"},
                "sinks": [{"type": "lake", "table": "badmq"}],
            }
        )
    )
    stats = run(load_pipeline(path), until_idle=True, idle_timeout=1.0)
    assert (stats.events_in, stats.events_out, stats.dead_lettered) == (5, 3, 2)
    dead = {
        row["origin"]: row["reason"]
        for row in read_dead_letters(settings, "badmq", limit=None).to_pylist()
    }
    assert dead == {
        f"bad/{run_id}/binary": "invalid UTF-8",
        f"bad/{run_id}/text": "malformed JSON",
    }


def test_mqtt_3_1_1_keeps_a_persistent_session_while_the_pipeline_is_down() -> None:
    url = require_mosquitto()
    run_id = uuid.uuid4().hex[:8]
    options = {"url": url, "topic": f"v3/{run_id}/#", "protocol": "3.1.1", "client_id": run_id}
    first = source(options)
    first.open(None)  # the broker creates the session and its subscription
    first.close()
    publish(f"v3/{run_id}/a", payloads(0, 25))  # nobody is connected: the broker queues
    again = source(options)
    again.open({"n": 0})
    try:
        # Mosquitto sends a 3.1.1 client 20 unacknowledged messages, then waits for acks:
        # the poll returns at once rather than wait for more that cannot come.
        assert sorted(ids_polled(again, 25, wait=1)) == list(range(20))
        again.commit({"n": again.n})
        assert sorted(ids_polled(again, 5)) == list(range(20, 25))
    finally:
        again.commit({"n": again.n})
        again.close()
        forget_session(run_id)


def forget_session(client_id: str) -> None:
    """End a 3.1.1 session for good (the broker keeps one without expiry otherwise)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    cleaner = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    cleaner.connect("127.0.0.1", 1883)
    cleaner.disconnect()


def test_a_broker_that_refuses_connections_is_retried_then_a_clear_error() -> None:
    from tests.mqtt_private import free_port

    src = source({"url": f"mqtt://u:secret-pw@127.0.0.1:{free_port()}", "topic": "t", "retries": 2})
    waits: list[float] = []
    src.sleep = waits.append  # an injected clock: no real waiting
    with pytest.raises(
        SourceError, match=r"cannot connect to 127\.0\.0\.1:\d+ after 3 attempts"
    ) as err:
        src.open(None)
    assert waits == [1.0, 2.0]
    assert "secret-pw" not in str(err.value)
    src.close()
