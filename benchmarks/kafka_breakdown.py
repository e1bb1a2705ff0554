"""Where the Kafka pipeline's time goes: wall time per stage, by timing wrappers.

Used by ``benchmarks/kafka.py --breakdown``. It wraps public stage methods (source poll and
the librdkafka consume inside it, decode, each transform, the model, sink writes, the
checkpoint) for one run of the benchmark pipeline and reports seconds and microseconds per
event for each, beside the run's wall time from the first record to the end of the epoch
that read the last event (from the start of the first poll that returned records, so the
first fetch's wait counts). Sink writes run in parallel threads, so their sum can exceed
their share of the wall time.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

STAGES: list[tuple[str, str, str, str]] = [
    # (label, module, owner ("" for a module function), attribute)
    ("source poll (all)", "sluice.sources.kafka", "KafkaSource", "poll"),
    ("  librdkafka consume() returning records", "", "", ""),
    ("  MessageColumns.of", "sluice.sources.kafka", "MessageColumns", "of"),
    ("  build_table (_raw, origin)", "sluice.sources.kafka", "", "build_table"),
    ("split per partition", "sluice.sources.kafka", "KafkaSource", "split"),
    ("decode (JSON → schema)", "sluice.sources.decode", "Decoder", "decode"),
    ("filter", "sluice.transforms.sql", "FilterTransform", "apply"),
    ("derive", "sluice.transforms.sql", "DeriveTransform", "apply"),
    ("window", "sluice.transforms.window", "WindowTransform", "apply"),
    ("online_anomaly model", "sluice.models.online", "OnlineAnomalyModel", "score"),
    ("lake writes (each, in parallel)", "sluice.sinks.lake", "LakeSink", "write"),
    ("operator and model state", "sluice.runners.stages", "Stages", "states"),
    ("checkpoint plan", "sluice.storage.checkpoints", "CheckpointStore", "plan_many"),
    ("checkpoint commit", "sluice.storage.checkpoints", "CheckpointStore", "commit_many"),
    ("offset commit", "sluice.sources.kafka", "KafkaSource", "commit"),
]
CONSUME = STAGES[1][0]


class Timers:
    """Accumulated wall time per label, and how to undo the wrapping."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.first: dict[str, float] = {}  # when a label's first counted call started
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, attribute: str, label: str, only_if: Callable[[Any], bool]) -> None:
        """Time ``owner.attribute`` under ``label`` (calls whose result fails ``only_if`` too)."""
        original = owner.__dict__[attribute]
        function = original.__func__ if isinstance(original, classmethod) else original

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            result = function(*args, **kwargs)
            if only_if(result):
                self.seconds[label] += time.perf_counter() - started
                self.first.setdefault(label, started)
            return result

        setattr(
            owner, attribute, classmethod(timed) if isinstance(original, classmethod) else timed
        )
        self._undo.append(lambda: setattr(owner, attribute, original))

    def undo(self) -> None:
        """Restore every wrapped attribute."""
        for undo in reversed(self._undo):
            undo()


def _timed_consumer(timers: Timers) -> Callable[[], None]:
    """Make new confluent-kafka consumers time ``consume()`` calls that return records."""
    import confluent_kafka

    base = confluent_kafka.Consumer

    class TimedConsumer(base):  # type: ignore[misc,valid-type]
        def consume(self, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            messages = super().consume(*args, **kwargs)
            if messages:
                timers.seconds[CONSUME] += time.perf_counter() - started
            return messages

    confluent_kafka.Consumer = TimedConsumer

    def undo() -> None:
        confluent_kafka.Consumer = base

    return undo


def stage_breakdown(bootstrap: str, topic: str, n: int, spec: dict[str, Any]) -> list[str]:
    """Run the pipeline ``spec`` once with timers; Markdown lines of the breakdown."""
    import importlib

    import sluice
    from sluice.config.models import Pipeline
    from sluice.core.settings import Settings

    timers = Timers()
    for label, module_name, owner_name, attribute in STAGES:
        if not module_name:
            continue
        module = importlib.import_module(module_name)
        owner = getattr(module, owner_name) if owner_name else module
        polling = attribute == "poll"  # count polls that returned records only
        timers.wrap(owner, attribute, label, lambda result, p=polling: not p or result is not None)
    undo_consumer = _timed_consumer(timers)
    marks: list[tuple[float, int]] = []

    def on_progress(stats: Any) -> None:
        marks.append((time.perf_counter(), int(stats.events_in)))

    try:
        with tempfile.TemporaryDirectory() as home:
            sluice.run(
                Pipeline.model_validate(spec),
                Settings(home=Path(home)),
                until_idle=True,
                idle_timeout=3.0,
                group=f"breakdown-{uuid.uuid4().hex}",
                on_progress=on_progress,
            )
    finally:
        timers.undo()
        undo_consumer()
    done = [t for t, count in marks if count >= n]
    first = timers.first.get(STAGES[0][0])
    if not done or first is None:
        raise RuntimeError("the pipeline did not read every event")
    wall = done[0] - first
    print(f"stage breakdown over {n:,} events, {wall:.2f}s of wall time", flush=True)
    lines = [
        "",
        f"Where the Sluice pipeline's time goes (one more run with timers, `--breakdown`): "
        f"{wall:.2f} s of wall time for {n:,} events ({n / wall:,.0f} events/s with the "
        "timers on), from the start of the first poll that returned records. Source poll "
        "counts only calls that returned records, so the group join and the idle wait at the "
        "end are left out; lake writes run in parallel threads (main table and window table).",
        "",
        "| stage | seconds | µs per event | share of wall time |",
        "|---|---:|---:|---:|",
    ]
    for label, *_ in STAGES:
        seconds = timers.seconds[label]
        print(f"  {label:45s} {seconds:7.2f}s  {seconds / n * 1e6:6.2f} µs/event", flush=True)
        name = label.strip()
        name = f"&nbsp;&nbsp;{name}" if label.startswith(" ") else name
        share = f"{seconds / wall:.0%}"
        lines.append(f"| {name} | {seconds:.2f} | {seconds / n * 1e6:.2f} | {share} |")
    return lines
