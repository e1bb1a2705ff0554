"""The local Mosquitto broker for tests: reachability, sessions, publishing."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterable
from typing import Any

from tests.conftest import require_service

HOST, PORT = "127.0.0.1", 1883
URL = f"mqtt://{HOST}:{PORT}"


def mosquitto_up() -> bool:
    """True when something accepts connections on 127.0.0.1:1883."""
    try:
        with socket.create_connection((HOST, PORT), timeout=3):
            return True
    except OSError:
        return False


def require_mosquitto() -> str:
    """The broker's URL (skipping locally, failing under CI, when it is not running)."""
    require_service(mosquitto_up(), "Mosquitto at 127.0.0.1:1883")
    return URL


def client(client_id: str | None = None) -> Any:
    """A paho MQTT 5 client (not connected)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    return mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )


def create_session(client_id: str, topic: str, qos: int = 1, expiry_s: int = 600) -> None:
    """Open a persistent session subscribed to ``topic`` (so the broker queues for it)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    subscribed = threading.Event()
    session = client(client_id)
    session.on_subscribe = lambda *_args: subscribed.set()
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = expiry_s
    session.connect(HOST, PORT, clean_start=False, properties=props)
    session.loop_start()
    try:
        session.subscribe(topic, qos)
        assert subscribed.wait(10), "the broker did not confirm the subscription"
    finally:
        session.disconnect()
        session.loop_stop()


def publish(topic: str, payloads: Iterable[bytes], qos: int = 1) -> int:
    """Publish ``payloads`` to ``topic`` and wait until the broker has each; how many."""
    publisher = client()
    publisher.connect(HOST, PORT)
    publisher.loop_start()
    try:
        infos = [publisher.publish(topic, payload, qos=qos) for payload in payloads]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        publisher.disconnect()
        publisher.loop_stop()
    return len(infos)
