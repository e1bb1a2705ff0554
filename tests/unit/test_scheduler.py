"""The embedded scheduler with a controllable clock: due intervals, restarts, catch-up, leases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sluice.core.settings import Settings
from sluice.orchestration.scheduler import Scheduler, backfill_intervals, due_intervals
from sluice.orchestration.spec import jobs_from_text
from sluice.storage.db import dispose_all


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    yield Settings(home=tmp_path / "home")
    dispose_all()


def _jobs(tmp_path: Path, schedule: str = "0 * * * *", catchup: bool = False, extra: str = ""):
    marker = tmp_path / "count"
    text = f"""
jobs:
  - name: hourly
    schedule: "{schedule}"
    catchup: {str(catchup).lower()}
    start_date: 2026-01-01T00:00:00Z
    allow_shell: true
{extra}
    tasks:
      - name: touch
        type: shell
        command: "echo {{{{ ds }}}} {{{{ data_interval_start }}}} >> {marker}"
"""
    return jobs_from_text(text, "jobs.yaml"), marker


def test_hourly_job_runs_each_interval_once(tmp_path: Path, settings: Settings) -> None:
    jobs, marker = _jobs(tmp_path)
    clock = FakeClock(datetime(2026, 1, 1, 5, 30, tzinfo=UTC))
    scheduler = Scheduler(settings, jobs, clock=clock)
    started = scheduler.tick()
    assert [(r["interval_start"].hour, r["interval_end"].hour) for r in started] == [(4, 5)]
    assert scheduler.tick() == []  # same interval: nothing new
    clock.advance(hours=1)
    assert len(scheduler.tick()) == 1
    lines = marker.read_text().splitlines()
    assert lines == ["2026-01-01 2026-01-01T04:00:00+00:00", "2026-01-01 2026-01-01T05:00:00+00:00"]
    runs = scheduler.store.recent("hourly")
    assert [r["state"] for r in runs] == ["success", "success"]
    scheduler.close()


def test_restart_and_second_scheduler_never_double_run(tmp_path: Path, settings: Settings) -> None:
    jobs, marker = _jobs(tmp_path)
    clock = FakeClock(datetime(2026, 1, 1, 5, 30, tzinfo=UTC))
    first = Scheduler(settings, jobs, clock=clock, owner="a")
    second = Scheduler(settings, jobs, clock=clock, owner="b")
    assert len(first.create_due_runs()) == 1
    assert second.create_due_runs() == []  # the unique (job, interval) key holds
    first.tick()
    second.tick()
    first.close()
    restarted = Scheduler(settings, jobs, clock=clock, owner="c")
    assert restarted.tick() == []
    assert len(marker.read_text().splitlines()) == 1
    second.close()
    restarted.close()


def test_catchup_off_runs_latest_only_and_on_runs_all(tmp_path: Path, settings: Settings) -> None:
    clock = FakeClock(datetime(2026, 1, 1, 3, 10, tzinfo=UTC))
    jobs, marker = _jobs(tmp_path, catchup=False)
    scheduler = Scheduler(settings, jobs, clock=clock)
    assert [r["interval_start"].hour for r in scheduler.tick()] == [2]
    scheduler.close()

    job = jobs_from_text(
        """
jobs:
  - name: hourly
    schedule: {every: 1h}
    catchup: true
    start_date: 2026-01-01T00:00:00Z
    tasks: [{name: q, type: sql, sql: "SELECT 1"}]
""",
        "j.yaml",
    ).jobs[0]
    intervals = due_intervals(job, clock.now, None)
    assert [(s.hour, e.hour) for s, e in intervals] == [(0, 1), (1, 2), (2, 3)]
    assert due_intervals(job, clock.now, intervals[-1][1]) == []
    assert len(marker.read_text().splitlines()) == 1


def test_catchup_scheduler_creates_missed_runs(tmp_path: Path, settings: Settings) -> None:
    jobs, marker = _jobs(tmp_path, catchup=True)
    clock = FakeClock(datetime(2026, 1, 1, 3, 10, tzinfo=UTC))
    scheduler = Scheduler(settings, jobs, clock=clock, max_workers=1)
    ran = 0
    while started := scheduler.tick():  # max_active_runs: 1 → one run per tick
        ran += len(started)
    assert ran == 3
    assert [line.split()[1][11:13] for line in marker.read_text().splitlines()] == [
        "00",
        "01",
        "02",
    ]
    scheduler.close()


def test_cron_time_zone_and_backfill_intervals() -> None:
    job = jobs_from_text("""
jobs:
  - name: nightly
    schedule: {cron: "0 2 * * *", timezone: Europe/Paris}
    tasks: [{name: q, type: sql, sql: "SELECT 1"}]
""").jobs[0]
    ((start, end),) = due_intervals(job, datetime(2026, 1, 3, 12, 0, tzinfo=UTC), None)
    assert start == datetime(2026, 1, 2, 1, tzinfo=UTC)
    assert end == datetime(2026, 1, 3, 1, tzinfo=UTC)
    days = backfill_intervals(
        job, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 4, tzinfo=UTC)
    )
    assert [s.day for s, _ in days] == [1, 2, 3]


def test_killed_run_is_marked_failed_and_retried(tmp_path: Path, settings: Settings) -> None:
    jobs, _ = _jobs(tmp_path, extra="    retries: 1\n    retry_delay: 0s")
    clock = FakeClock(datetime(2026, 1, 1, 5, 30, tzinfo=UTC))
    dead = Scheduler(settings, jobs, clock=clock, owner="dead", lease="60s")
    (run_id,) = dead.create_due_runs()
    assert dead.store.claim(run_id, "dead", clock.now, clock.now + timedelta(seconds=60))
    dead.store.start_task(run_id, "touch", 1, clock.now)  # the worker dies here
    dead.close()

    survivor = Scheduler(settings, jobs, clock=clock, owner="survivor")
    assert survivor.tick() == []  # lease still live: nobody steals the run
    clock.advance(seconds=61)
    assert [r["id"] for r in survivor.tick()] == [run_id]
    run = survivor.store.get(run_id)
    assert run["state"] == "success"
    assert [(t["attempt"], t["state"]) for t in run["tasks"]] == [(1, "failed"), (2, "success")]
    assert "lease expired" in run["tasks"][0]["error"]
    survivor.close()


def test_background_scheduler_runs_and_stops(tmp_path: Path, settings: Settings) -> None:
    import time

    from sluice.orchestration.service import start_scheduler, store_for

    marker = tmp_path / "bg"
    path = tmp_path / "jobs.yaml"
    path.write_text(f"""
jobs:
  - name: bg
    schedule: "every 1h"
    allow_shell: true
    tasks: [{{name: t, type: shell, command: "echo ran >> {marker}"}}]
""")
    started = start_scheduler(settings, path, poll=0.05)
    assert started is not None
    _, stop, thread = started
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
        r["state"] == "success" for r in store_for(settings).recent("bg")
    ):
        time.sleep(0.05)
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    assert marker.read_text().split() == ["ran"]


def test_worker_that_lost_its_lease_stops(tmp_path: Path, settings: Settings) -> None:
    jobs, marker = _jobs(tmp_path)
    clock = FakeClock(datetime(2026, 1, 1, 5, 30, tzinfo=UTC))
    slow = Scheduler(settings, jobs, clock=clock, owner="slow")
    (run_id,) = slow.create_due_runs()
    run = slow.store.get(run_id)
    assert slow.store.claim(run_id, "slow", clock.now, clock.now + timedelta(seconds=60))
    clock.advance(seconds=61)
    assert slow.store.claim(run_id, "other", clock.now, clock.now + timedelta(seconds=60))
    assert slow.executor.execute(jobs.jobs[0], run) == "lost"
    assert not marker.exists()
    assert slow.store.get(run_id)["lease_owner"] == "other"
    slow.close()
