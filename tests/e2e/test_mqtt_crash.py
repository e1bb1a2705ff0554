"""SIGKILL `sluice run` on an MQTT topic while 6,000 QoS-1 messages are published: each lands once.

The broker keeps the pipeline's persistent session while it is down and redelivers what was
not acknowledged; acknowledgements follow the committed epoch, so nothing is lost, and
``dedupe`` on the payload id drops what a crash makes the broker deliver twice.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from deltalake import DeltaTable

from tests.mqtt_broker import create_session, publish, require_mosquitto
from tests.processes import committed_epoch, kill_when, start_run

N_MESSAGES = 6_000
DEVICES = 5
BURST = 50
# Mosquitto queues at most ``max_queued_messages`` (1000 by default) for a session whose client
# is down and drops the rest: while no run is up the publisher sends at most this many.
DOWN_BUDGET = 300

PIPELINE = """\
name: mqttcrash
source: {{type: mqtt, url: "{url}", topic: "plant/{run}/+/telemetry", qos: 1,
          client_id: "crash-{run}", session_expiry: 10m}}
schema: {{id: long, device_id: string, ts: timestamp, temperature: double}}
event_time: ts
batch: {{max_rows: 400, max_latency: 100ms}}
transforms:
  - dedupe: {{key: id, window: 1h}}
sinks:
  - {{type: lake, table: mqttcrash, partition_by: none}}
"""


def message(i: int) -> bytes:
    """The ``i``-th telemetry message (ids are unique; time advances 100 ms per message)."""
    ts = 1_780_000_000_000 + i * 100
    return json.dumps(
        {"id": i, "device_id": f"d{i % DEVICES}", "ts": ts, "temperature": 20 + i % 13}
    ).encode()


def publish_slowly(run: str, up: threading.Event, done: threading.Event) -> None:
    """Publish every message at QoS 1 in bursts, about 200 a second.

    While the pipeline is down (``up`` clear) at most ``DOWN_BUDGET`` messages go out, so the
    broker's queue for the session cannot overflow however long a restart takes on a loaded
    machine; the messages in flight at the kill are what the test is about.
    """
    sent_while_down = 0
    for first in range(0, N_MESSAGES, BURST):
        if not up.is_set() and sent_while_down >= DOWN_BUDGET:
            up.wait(timeout=300)
        sent_while_down = 0 if up.is_set() else sent_while_down + BURST
        for device in range(DEVICES):
            ids = range(first + device, min(first + BURST, N_MESSAGES), DEVICES)
            publish(f"plant/{run}/d{device}/telemetry", [message(i) for i in ids])
        time.sleep(BURST / 200)
    done.set()


def _wait_for_epoch(home: Path, epoch: int) -> None:
    deadline = time.monotonic() + 120  # a guard against hanging, not a measurement
    while committed_epoch(home, "mqttcrash") <= epoch:
        assert time.monotonic() < deadline, "the restarted run committed nothing"
        time.sleep(0.02)


def test_sigkill_while_publishing_lands_every_message_exactly_once(tmp_path: Path) -> None:
    url = require_mosquitto()
    run = uuid.uuid4().hex[:8]
    create_session(f"crash-{run}", f"plant/{run}/+/telemetry", expiry_s=600)
    home = tmp_path / "home"
    pipeline = tmp_path / "mqttcrash.yaml"
    pipeline.write_text(PIPELINE.format(url=url, run=run))

    up, published = threading.Event(), threading.Event()
    up.set()
    publisher = threading.Thread(target=publish_slowly, args=(run, up, published), daemon=True)
    publisher.start()

    def down_when(target: int) -> Callable[[], bool]:
        def reached() -> bool:
            epoch = committed_epoch(home, "mqttcrash")
            if epoch > previous_kill:
                up.set()  # this run is up and committing
            if epoch >= target:
                up.clear()
                return True
            return False

        return reached

    previous_kill = 0
    kill_when(start_run(pipeline, home), down_when(2))
    assert not published.is_set(), "the first kill must come while messages are published"
    previous_kill = first_kill = committed_epoch(home, "mqttcrash")
    kill_when(start_run(pipeline, home), down_when(first_kill + 4))
    assert not published.is_set(), "the second kill must come while messages are published"
    second_kill = committed_epoch(home, "mqttcrash")

    # the idle timeout outlasts any pause of the publisher on a loaded machine
    last = start_run(pipeline, home, "--idle-timeout", "8")
    _wait_for_epoch(home, second_kill)
    up.set()
    publisher.join(timeout=300)
    assert published.is_set()
    _, err = last.communicate(timeout=300)
    assert last.returncode == 0, err.decode()

    lake = DeltaTable(str(home / "lake" / "mqttcrash")).to_pyarrow_table()
    ids = lake.column("id").to_pylist()
    assert len(ids) == N_MESSAGES
    assert sorted(ids) == list(range(N_MESSAGES))
    topics = set(lake.column("_topic").to_pylist())
    assert topics == {f"plant/{run}/d{d}/telemetry" for d in range(DEVICES)}
