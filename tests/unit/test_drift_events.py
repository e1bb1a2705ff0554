"""Drift events are keyed by (pipeline, model, epoch): a replayed epoch records them once."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, func, select

from sluice.core.settings import Settings
from sluice.models.drift import DriftEvent, DriftLog, drift_events, drift_writer
from sluice.storage.db import get_engine


def count(engine: Engine, epoch: int | None = None) -> int:
    query = select(func.count()).select_from(drift_events)
    if epoch is not None:
        query = query.where(drift_events.c.epoch == epoch)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def test_a_replayed_epoch_writes_its_drift_events_once(tmp_path: Path) -> None:
    engine = get_engine(str(Settings(home=tmp_path).ensure().metadata_url))
    DriftLog(engine)
    events = [DriftEvent("temp", "psi", 0.4, 0.2), DriftEvent("temp", "ks", 0.3, 0.2)]
    for _ in range(2):  # the first attempt, then the replay after a crash
        with engine.begin() as conn:
            drift_writer("p", "m", 7, "alert", events)(conn)
    assert count(engine, 7) == 2
    with engine.begin() as conn:
        drift_writer("p", "m", 8, "alert", events[:1])(conn)
        drift_writer("p", "other", 7, "alert", events[:1])(conn)
    assert count(engine) == 4
    assert sorted(DriftLog(engine).recent().column("detector").to_pylist()) == [
        "ks",
        "psi",
        "psi",
        "psi",
    ]
