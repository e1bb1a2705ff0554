"""Quix Streams 3.28 baseline: the Kafka benchmark's pipeline (run by ``benchmarks/kafka.py``).

JSON parse (Quix's deserializer, event time from ``ts``) → filter → derive → 1-minute tumbling
window per device (a branch written to its own Parquet files) → per-device rolling z-score in
Quix state (``zscore.py``) → Parquet files. Quix has no Delta sink; ``LocalFileSink`` writing
Parquet is the closest. Usage:
``python quix_pipeline.py BOOTSTRAP TOPIC EVENTS OUT_DIR [LIBRDKAFKA_JSON]``; prints one JSON
line: events/s from the first record to the end of the run (its last checkpoint included).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import zscore
from quixstreams import Application
from quixstreams.dataframe.windows.aggregations import Count, Mean
from quixstreams.sinks.community.file.local import LocalFileSink

FEATURES = ("temp_c", "pressure")


def event_time_ms(value: dict, _headers: object, _timestamp: int, _type: object) -> int:
    """Event time of a record: its ``ts`` field in epoch milliseconds."""
    return int(datetime.fromisoformat(value["ts"]).timestamp() * 1000)


def main() -> None:
    """Run the pipeline until ``EVENTS`` records were read, then print the rate."""
    bootstrap, topic_name, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    extra = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(out)  # LocalFileSink takes a plain relative directory name
    app = Application(
        broker_address=bootstrap,
        consumer_group=f"quix-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        state_dir="state",
        consumer_extra_config={"session.timeout.ms": 6000, **extra},
    )
    topic = app.topic(topic_name, value_deserializer="json", timestamp_extractor=event_time_ms)
    sdf = app.dataframe(topic)
    seen = {"n": 0, "t0": 0.0}

    def count(value: dict) -> None:
        if not seen["n"]:
            seen["t0"] = time.perf_counter()
        seen["n"] += 1
        if seen["n"] >= n:
            app.stop()

    def score(value: dict, state: object) -> dict:
        key_state = state.get("z") or zscore.fresh(len(FEATURES))  # type: ignore[attr-defined]
        value["temp_anomaly_score"] = zscore.score_learn(key_state, [value[f] for f in FEATURES])
        value["temp_anomaly"] = value["temp_anomaly_score"] > zscore.THRESHOLD
        state.set("z", key_state)  # type: ignore[attr-defined]
        return value

    sdf = sdf.update(count)
    sdf = sdf[sdf["status"] != "maintenance"]
    sdf["temp_c"] = sdf["temperature"].apply(lambda t: (t - 32) * 5 / 9)
    windows = (
        sdf.tumbling_window(timedelta(minutes=1)).agg(temp_mean=Mean("temp_c"), n=Count()).final()
    )
    windows.sink(LocalFileSink(directory="windows", format="parquet"))
    sdf = sdf.apply(score, stateful=True)
    sdf.sink(LocalFileSink(directory="events", format="parquet"))
    app.run()
    seconds = time.perf_counter() - seen["t0"]
    print(json.dumps({"events": seen["n"], "seconds": seconds, "rate": seen["n"] / seconds}))


if __name__ == "__main__":
    main()
