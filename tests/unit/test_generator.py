"""Synthetic data and the generator source: determinism, labels, regime change, resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sluice.config.models import SourceConfig
from sluice.core.errors import ConfigError, SourceError
from sluice.sources import synthetic, synthetic_text
from sluice.sources.base import SourceBatch, SourceContext, create_source
from sluice.sources.generator import GeneratorSource


def _source(tmp_path: Path, **options: Any) -> GeneratorSource:
    config = SourceConfig.model_validate({"type": "generator", **options})
    source = create_source(config, SourceContext(pipeline="p", home=str(tmp_path)))
    assert isinstance(source, GeneratorSource)
    return source


def _drain(source: GeneratorSource, max_rows: int) -> list[SourceBatch]:
    batches = []
    while (batch := source.poll(max_rows, timeout=0.01)) is not None:
        batches.append(batch)
    return batches


def _concat(batches: list[SourceBatch]) -> pa.Table:
    return pa.concat_tables([b.data for b in batches])


# -- telemetry ----------------------------------------------------------------------------


def test_same_seed_gives_identical_tables_and_other_seeds_differ() -> None:
    first = synthetic.telemetry(20_000, n_devices=10, seed=5)
    assert first.equals(synthetic.telemetry(20_000, n_devices=10, seed=5))
    other = synthetic.telemetry(20_000, n_devices=10, seed=6)
    assert not first.column("temperature").equals(other.column("temperature"))


@pytest.mark.parametrize("chunk_rows", [1_000, 7_919, 65_536])
def test_chunks_concatenate_to_the_single_call(chunk_rows: int) -> None:
    whole = synthetic.telemetry(50_000, n_devices=13, seed=2)
    chunks = list(synthetic.telemetry_chunks(50_000, n_devices=13, seed=2, chunk_rows=chunk_rows))
    assert len(chunks) == -(-50_000 // chunk_rows)
    assert pa.concat_tables(chunks).equals(whole)


def test_schema_ids_and_timestamps() -> None:
    table = synthetic.telemetry(30_000, n_devices=12, seed=1)
    assert table.schema == synthetic.telemetry_schema(labels=True)
    assert table.column("device_id")[13].as_py() == "dev-0001"
    assert set(pc.unique(table.column("status")).to_pylist()) == {"ok", "maintenance", "warning"}
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    per_device = ts.reshape(-1, 12)
    assert (np.diff(per_device, axis=0) > 0).all()  # increasing per device
    assert (np.diff(ts) < 0).any()  # a little out of order across devices
    assert synthetic.telemetry(100, labels=False).column_names[-1] == "status"


def test_every_anomaly_kind_is_labelled_with_consistent_columns() -> None:
    table = synthetic.telemetry(200_000, n_devices=20, seed=3)
    kinds = table.column("anomaly_kind")
    assert set(pc.unique(kinds).drop_null().to_pylist()) == set(synthetic.KINDS)
    assert pc.is_valid(kinds).equals(table.column("is_anomaly"))
    rate = pc.mean(table.column("is_anomaly").cast(pa.float64())).as_py()
    assert 0.004 < rate < 0.02


def _device_series(table: pa.Table, n_devices: int, device: int, column: str) -> np.ndarray:
    return table.column(column).to_numpy(zero_copy_only=False)[device::n_devices]


def test_stuck_episodes_repeat_the_last_normal_reading() -> None:
    table = synthetic.telemetry(200_000, n_devices=20, seed=3)
    kind = table.column("anomaly_kind").to_numpy(zero_copy_only=False)
    stuck_rows = np.flatnonzero(kind == "stuck")
    first = stuck_rows[0]
    values = {f: table.column(f).to_numpy() for f in synthetic.FEATURES}
    frozen = [f for f in synthetic.FEATURES if values[f][first] == values[f][first - 20]]
    assert len(frozen) == 1  # exactly one feature repeats the previous step's reading
    span = stuck_rows[stuck_rows % 20 == first % 20]
    span = span[span < first + 60 * 20]
    assert 30 <= len(span) <= 60
    assert (values[frozen[0]][span] == values[frozen[0]][first - 20]).all()


def test_labelled_anomalies_deviate_strongly_from_the_device_level() -> None:
    n_devices = 20
    table = synthetic.telemetry(200_000, n_devices=n_devices, seed=3, regime_change_at=None)
    kind = table.column("anomaly_kind").to_numpy(zero_copy_only=False).reshape(-1, n_devices)
    sigmas = []
    for feature in synthetic.FEATURES:
        values = table.column(feature).to_numpy().reshape(-1, n_devices)
        normal = np.where(kind == None, values, np.nan)  # noqa: E711 - elementwise
        sigmas.append(np.abs(values - np.nanmedian(normal, axis=0)) / np.nanstd(normal, axis=0))
    largest = np.max(sigmas, axis=0)
    for name in ("spike", "level_shift"):
        assert np.median(largest[kind == name]) > 3.0, name
    assert np.median(largest[kind == None]) < 2.0  # noqa: E711


def test_regime_change_shifts_every_device_without_labels() -> None:
    n_devices, n_events = 10, 100_000
    table = synthetic.telemetry(n_events, n_devices=n_devices, seed=4, regime_change_at=0.5)
    step = n_events // n_devices // 2
    temps = table.column("temperature").to_numpy().reshape(-1, n_devices)
    labels = table.column("is_anomaly").to_numpy(zero_copy_only=False).reshape(-1, n_devices)
    before, after = temps[step - 200 : step], temps[step : step + 200]
    shift = after.mean(axis=0) - before.mean(axis=0)
    assert (shift > 4.0).all()
    quiet_from = step // synthetic.SLOT_STEPS * synthetic.SLOT_STEPS
    window = labels[quiet_from : quiet_from + 2 * synthetic.SLOT_STEPS]
    assert step + synthetic.SLOT_STEPS <= quiet_from + 2 * synthetic.SLOT_STEPS
    assert not window.any()  # no episode around the change, and the change itself is unlabelled
    unchanged = synthetic.telemetry(n_events, n_devices=n_devices, seed=4, regime_change_at=None)
    same = quiet_from * n_devices  # before the quiet slots nothing depends on the change
    assert unchanged.slice(0, same).equals(table.slice(0, same))


def test_drift_label_starts_at_three_sigma() -> None:
    table = synthetic.telemetry(400_000, n_devices=20, seed=8, regime_change_at=None)
    kind = table.column("anomaly_kind").to_numpy(zero_copy_only=False)
    drift_rows = np.flatnonzero(kind == "drift")
    device = drift_rows[0] % 20
    span = drift_rows[drift_rows % 20 == device]
    span = span[span <= span[0] + 120 * 20]
    assert np.all(np.diff(span) == 20)  # one contiguous run of that device's steps
    assert 20 <= len(span) <= 120 * (1 - synthetic.DRIFT_LABEL_SIGMA / 6.0) + 1


# -- tickets and devices ------------------------------------------------------------------


def test_tickets_have_every_label_and_are_deterministic() -> None:
    table = synthetic_text.tickets(2_000, seed=1)
    assert table.equals(synthetic_text.tickets(2_000, seed=1))
    assert set(table.column("category").to_pylist()) == set(synthetic_text.CATEGORIES)
    assert set(table.column("urgency").to_pylist()) == set(synthetic_text.URGENCIES)
    texts = table.column("text").to_pylist()
    assert len(set(texts)) > 1_900
    assert all(t and "{n}" not in t and "  " not in t for t in texts)
    assert synthetic_text.tickets(50, seed=1, first=1_950).equals(table.slice(1_950))


def test_tickets_are_learnable_but_not_trivially() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    data = synthetic_text.tickets(4_000, seed=2).to_pydict()
    features = TfidfVectorizer(sublinear_tf=True).fit_transform(data["text"])
    model = LogisticRegression(max_iter=300).fit(features[:3_000], data["category"][:3_000])
    accuracy = np.mean(model.predict(features[3_000:]) == np.array(data["category"][3_000:]))
    assert 0.85 < accuracy < 0.99


def test_devices_reference_table() -> None:
    table = synthetic.devices(30, seed=2)
    assert table.column_names == ["device_id", "site", "model", "installed"]
    assert table.column("device_id").to_pylist() == synthetic.device_ids(30)
    assert table.equals(synthetic.devices(30, seed=2))


def test_write_jsonl_streams_chunks_as_iso_utc(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    chunks = synthetic.telemetry_chunks(5_000, n_devices=5, seed=1, chunk_rows=1_024)
    synthetic.write_jsonl(chunks, path)
    lines = path.read_bytes().splitlines()
    assert len(lines) == 5_000
    first = json.loads(lines[0])
    expected = synthetic.telemetry(5_000, n_devices=5, seed=1).slice(0, 1).to_pylist()[0]
    assert first["ts"] == expected["ts"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert first["temperature"] == expected["temperature"]
    assert first["anomaly_kind"] is None
    synthetic.write_jsonl(pa.table({"a": pa.array([], pa.int64())}), tmp_path / "empty.jsonl")
    assert (tmp_path / "empty.jsonl").read_bytes() == b""


def test_million_rows_generate_in_one_call() -> None:
    table = synthetic.telemetry(1_000_000, n_devices=100, seed=1)
    assert table.num_rows == 1_000_000
    assert table.column("ts").null_count == 0


# -- the source ---------------------------------------------------------------------------


def test_source_batches_match_the_function_whatever_the_batch_size(tmp_path: Path) -> None:
    expected = synthetic.telemetry(3_000, n_devices=7, seed=9)
    for max_rows in (1, 999, 5_000):
        source = _source(tmp_path, events=3_000, devices=7, seed=9)
        source.open(None)
        batches = _drain(source, max_rows) if max_rows > 1 else _drain_small(source)
        table = _concat(batches)
        assert table.drop_columns(["__origin"]).equals(expected)
        assert table.column("__origin")[2_999].as_py() == "generator:2999"
        assert batches[-1].position == {"emitted": 3_000}
        assert batches[-1].raw_format == "arrow"
        assert source.exhausted


def _drain_small(source: GeneratorSource) -> list[SourceBatch]:
    batches = [b for b in (source.poll(1, 0.01) for _ in range(10)) if b is not None]
    batches += _drain(source, 1_000)
    return batches


def test_resume_from_a_position_and_replay_until(tmp_path: Path) -> None:
    whole = _concat(_drain(_opened(tmp_path, None), 4_000))
    source = _opened(tmp_path, {"emitted": 1_234})
    replay = source.poll(10_000, timeout=0.01, until={"emitted": 2_000})
    assert replay is not None and replay.position == {"emitted": 2_000}
    rest = _drain(source, 4_000)
    assert pa.concat_tables([replay.data, _concat(rest)]).equals(whole.slice(1_234))
    assert source.exhausted and source.poll(10, timeout=0.01) is None
    with pytest.raises(SourceError):
        _opened(tmp_path, {"emitted": 6_000})


def _opened(tmp_path: Path, position: dict[str, int] | None) -> GeneratorSource:
    source = _source(tmp_path, events=5_000, devices=3, seed=1, regime_change_at=0.5)
    source.open(position)
    return source


def test_tickets_source_and_labels_off(tmp_path: Path) -> None:
    source = _source(tmp_path, kind="tickets", events=100, seed=3, labels=False)
    source.open({"emitted": 40})
    table = _concat(_drain(source, 25))
    expected = synthetic_text.tickets(60, seed=3, first=40).drop_columns(["category", "urgency"])
    assert table.drop_columns(["__origin"]).equals(expected)
    telemetry = _source(tmp_path, events=10, labels=False)
    telemetry.open(None)
    batch = telemetry.poll(10, 0.01)
    assert batch is not None and "is_anomaly" not in batch.data.column_names


def test_rate_paces_rows_and_unbounded_never_exhausts(tmp_path: Path) -> None:
    source = _source(tmp_path, events=None, rate=200.0)
    source.open(None)
    batch = source.poll(1_000, timeout=0.2)
    assert batch is not None and batch.data.num_rows < 200
    assert not source.exhausted and source.lag() == {}


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"kind": "weather"}, "source.kind"),
        ({"events": -1}, "source.events"),
        ({"rate": 0}, "source.rate"),
        ({"interval": "soon"}, "source.interval"),
        ({"interval": "0s"}, "source.interval"),
        ({"colour": "red"}, "source.colour"),
        ({"format": "json"}, "source.format"),
    ],
)
def test_bad_options_are_config_errors(tmp_path: Path, options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _source(tmp_path, **options)
    assert info.value.key == key
