"""What the batch runners decide on the driver: SQL translation, lateness, missing engines."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from sluice.config.loader import load_pipeline
from sluice.config.models import WindowSpec
from sluice.core.context import EpochContext
from sluice.core.errors import ConfigError, MissingDependencyError
from sluice.core.settings import Settings
from sluice.runners.bounded import closed_before
from sluice.runners.spark_sql import to_spark
from sluice.transforms.window import WindowTransform, event_time_us

SECOND = 1_000_000


def test_duckdb_expressions_translate_to_spark_sql() -> None:
    """Dialect differences are rewritten; plain SQL passes through."""
    assert to_spark("status <> 'maintenance'", "k") == "status <> 'maintenance'"
    assert to_spark("(t - 32) * 5 / 9", "k") == "(t - 32) * 5 / 9"
    assert to_spark("x // 2", "k") == "x DIV 2"
    assert to_spark("regexp_matches(s, 'a+')", "k") == "s RLIKE 'a+'"
    assert to_spark("x::INTEGER", "k") == "CAST(x AS INT)"


def test_a_function_without_translation_is_refused_naming_the_key() -> None:
    """sqlglot passes unknown functions through; the runner refuses them instead."""
    with pytest.raises(ConfigError) as info:
        to_spark("list_reduce(readings, (a, b) -> a + b) > 3", "transforms[0].filter")
    assert info.value.key == "transforms[0].filter"
    assert "list_reduce()" in str(info.value)


def test_spark_refuses_untranslatable_sql_before_starting(tmp_path: Path) -> None:
    """The error names the file and line of the expression; no session is started."""
    from sluice.runners.check import located
    from sluice.runners.spark import SparkRunner

    path = tmp_path / "p.yaml"
    path.write_text(
        "name: bad\n"
        "source: {type: generator, events: 10}\n"
        "transforms:\n"
        "  - filter: \"status <> 'x'\"\n"
        "  - derive:\n"
        '      h: "hash(device_id)"\n'
        "sinks: [{type: lake, table: bad}]\n"
    )
    pipeline = load_pipeline(path)
    with pytest.raises(ConfigError) as info:
        SparkRunner(pipeline, Settings(home=tmp_path / "home"))
    located_error = located(info.value, pipeline, path)
    assert str(located_error).startswith(f"{path}:6: transforms[1].derive.h:")
    assert "hash()" in str(located_error)


def test_a_missing_pyspark_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without PySpark the runner says which extra to install."""
    from sluice.runners.spark import spark_session

    monkeypatch.setitem(sys.modules, "pyspark", None)
    with pytest.raises(MissingDependencyError, match=r"sluice\[spark\]"):
        spark_session(None, "x")


def test_a_missing_beam_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without Apache Beam the runner says which extra to install."""
    from sluice.runners.beam import BeamRunner

    path = tmp_path / "p.yaml"
    path.write_text("name: b\nsource: {type: generator, events: 10}\nsinks: []\n")
    runner = BeamRunner(load_pipeline(path), Settings(home=tmp_path / "home"))
    monkeypatch.setitem(sys.modules, "apache_beam", None)
    with pytest.raises(MissingDependencyError, match=r"sluice\[beam\]"):
        runner.prepare()
    runner.close()


@pytest.mark.parametrize("seed", range(6))
def test_block_horizons_mark_the_rows_the_local_window_finds_late(seed: int) -> None:
    """Late = first window end <= the horizon of earlier blocks, as the streaming window does."""
    rng = np.random.default_rng(seed)
    seconds = int(rng.integers(0, 90))
    lateness = seconds * SECOND
    spec = WindowSpec(size="1m", aggregate={"n": "count(*)"}, allowed_lateness=f"{seconds}s")
    blocks = [
        pa.table(
            {
                "ts": pa.array(
                    (1_700_000_000 + b * 40 + rng.integers(-150, 60, 30)) * SECOND,
                    pa.timestamp("us", tz="UTC"),
                )
            }
        )
        for b in range(8)
    ]
    local = WindowTransform(spec, 0, "ts")
    ctx = EpochContext("p", 1)
    want = []
    for block in blocks:
        before = ctx.counters["late"]
        local.apply(block, ctx)
        want.append(ctx.counters["late"] - before)
    window = WindowTransform(spec, 0, "ts")
    times = [event_time_us(b, "ts", "w").to_numpy() for b in blocks]
    horizon = closed_before({i: int(t.max()) for i, t in enumerate(times)}, lateness, len(blocks))
    got = [
        int((window.first_end(t) <= horizon[i]).sum()) if i in horizon else 0
        for i, t in enumerate(times)
    ]
    assert got == want and sum(want) > 0
