"""Deterministic synthetic data: IoT telemetry with labelled anomalies, and devices.

Every value is a pure function of ``(seed, row index)``: random numbers come from a
counter-based hash (splitmix64) of the seed, a stream number and the row or episode index,
so any row range can be generated on its own, in any order, and row ``k`` is identical
whatever the batch boundaries. Everything is vectorised with numpy; no per-row Python.

Telemetry layout: row ``i`` belongs to device ``i % n_devices`` at that device's step
``i // n_devices``. Each device's timeline is cut into slots of ``SLOT_STEPS`` steps; each
slot holds at most one anomaly episode and at most one maintenance window, both drawn from
the hash of ``(seed, device, slot)``. See :func:`telemetry` for the exact label rules.
Support tickets live in :mod:`sluice.sources.synthetic_text` (also reachable from here).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.core.types import duration_us

if TYPE_CHECKING:
    import duckdb

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
SLOT_STEPS = 400  # per-device steps per anomaly slot
SEASON_STEPS = 1440  # one seasonal ("daily") cycle every 1440 events per device
ANOMALY_FIRST_OFFSET = 120  # episodes start at slot offset >= this (maintenance sits before)
ANOMALY_END_MARGIN = 20  # and end this many steps before the slot ends
DRIFT_LABEL_SIGMA = 3.0  # a drift is labelled once its offset reaches this many sigma
KINDS = ("spike", "level_shift", "stuck", "drift")
KIND_WEIGHTS = (0.4, 0.2, 0.2, 0.2)
KIND_LENGTHS = ((1, 1), (20, 50), (30, 60), (80, 120))  # inclusive event ranges
KIND_SIGMAS = ((6.0, 10.0), (5.0, 8.0), (0.0, 0.0), (6.0, 9.0))  # magnitude ranges
FEATURES = ("temperature", "pressure", "vibration")
DECIMALS = (3, 3, 4)  # sensor resolution per feature
STATUSES = ("ok", "maintenance", "warning")
WARNING_LIMITS = (92.0, 118.0, 3.8)  # device-side alarm thresholds per feature
SPURIOUS_WARNING_RATE = 0.001
DEFAULT_CHUNK_ROWS = 262_144

_MASK = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser over a uint64 array (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _stream_key(seed: int, stream: int) -> np.uint64:
    """A 64-bit key for one random stream of one seed."""
    x = np.array(
        [(seed * 0x9E3779B97F4A7C15 + stream * 0xD1B54A32D192ED03 + 1) & _MASK], dtype=np.uint64
    )
    return np.uint64(_mix(_mix(x))[0])


def uniform(seed: int, stream: int, index: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1), one per ``index`` (a pure function of seed, stream, index)."""
    h = _mix(index.astype(np.uint64) * _GOLDEN + _stream_key(seed, stream))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def normal(seed: int, stream: int, index: np.ndarray) -> np.ndarray:
    """Standard normal floats, one per ``index`` (Box-Muller over the two halves of a hash)."""
    h = _mix(index.astype(np.uint64) * _GOLDEN + _stream_key(seed, stream))
    u1 = ((h >> np.uint64(32)).astype(np.float64) + 0.5) * (1.0 / 4294967296.0)
    u2 = (h & np.uint64(0xFFFFFFFF)).astype(np.float64) * (1.0 / 4294967296.0)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)


def _between(u: np.ndarray, low: float, high: float) -> np.ndarray:
    return low + (high - low) * u


def _ints_between(u: np.ndarray, low: np.ndarray | int, high: np.ndarray | int) -> np.ndarray:
    """Integers in [low, high] (inclusive) from uniforms."""
    return (low + np.floor(u * (np.asarray(high) - low + 1))).astype(np.int64)


@dataclass(frozen=True)
class TelemetrySpec:
    """Everything that defines a telemetry run; rows are a pure function of it and the index."""

    n_devices: int = 50
    seed: int = 0
    start_us: int = int(DEFAULT_START.timestamp()) * 1_000_000
    interval_us: int = 1_000_000
    regime_step: int | None = None  # per-device step at which the regime changes
    anomaly_rate: float = 0.01
    maintenance_rate: float = 0.02
    labels: bool = True

    def slot_anomaly_probability(self) -> float:
        """Chance that a slot holds an episode, so that ~anomaly_rate of events are labelled."""
        mean_label = sum(w * _mean_label_length(k) for k, w in enumerate(KIND_WEIGHTS))
        return min(1.0, self.anomaly_rate * SLOT_STEPS / mean_label)

    def slot_maintenance_probability(self) -> float:
        """Chance that a slot holds a maintenance window (mean 20 events)."""
        return min(1.0, self.maintenance_rate * SLOT_STEPS / 20.0)


def _mean_label_length(kind: int) -> float:
    low, high = KIND_LENGTHS[kind]
    if KINDS[kind] != "drift":
        return (low + high) / 2
    peak = sum(KIND_SIGMAS[kind]) / 2
    return (low + high) / 2 * (1 - DRIFT_LABEL_SIGMA / peak)


@dataclass(frozen=True)
class _Devices:
    """Per-device constants (indexed by device number)."""

    temp_base: np.ndarray
    temp_sigma: np.ndarray
    press_base: np.ndarray
    press_sigma: np.ndarray
    vib_base: np.ndarray
    vib_sigma: np.ndarray
    phase: np.ndarray
    temp_shift: np.ndarray
    press_shift: np.ndarray
    vib_shift: np.ndarray


def _devices(spec: TelemetrySpec) -> _Devices:
    idx = np.arange(spec.n_devices, dtype=np.int64)

    def draw(stream: int, low: float, high: float) -> np.ndarray:
        return _between(uniform(spec.seed, 100 + stream, idx), low, high)

    return _Devices(
        temp_base=draw(0, 60.0, 80.0),
        temp_sigma=draw(1, 0.8, 1.2),
        press_base=draw(2, 95.0, 110.0),
        press_sigma=draw(3, 0.4, 0.6),
        vib_base=draw(4, 1.5, 3.0),
        vib_sigma=draw(5, 0.06, 0.10),
        phase=draw(6, 0.0, 1.0),
        temp_shift=draw(7, 6.0, 10.0),
        press_shift=draw(8, 3.0, 6.0),
        vib_shift=draw(9, 0.2, 0.5),
    )


def _clean(
    spec: TelemetrySpec, dev: _Devices, d: np.ndarray, step: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Anomaly-free readings and their noise sigmas for (device, step) pairs."""
    after = np.zeros(len(step)) if spec.regime_step is None else (step >= spec.regime_step) * 1.0
    key = step * spec.n_devices + d
    z_t, z_p, z_v = (normal(spec.seed, s, key) for s in (1, 3, 5))
    season = 3.0 * np.sin(2.0 * math.pi * (step / SEASON_STEPS + dev.phase[d]))
    noise_scale = 1.0 + 0.3 * after
    sig_t = dev.temp_sigma[d] * noise_scale
    sig_p = dev.press_sigma[d] * noise_scale
    sig_v = dev.vib_sigma[d] * (1.0 + 0.5 * after)
    temp = dev.temp_base[d] + season + after * dev.temp_shift[d] + sig_t * z_t
    press = (
        dev.press_base[d]
        + 0.25 * season
        + after * dev.press_shift[d]
        + sig_p * (0.5 * z_t + 0.866 * z_p)
    )
    vib = dev.vib_base[d] + after * dev.vib_shift[d] + sig_v * z_v
    return [temp, press, vib], [sig_t, sig_p, sig_v]


def _round(values: list[np.ndarray]) -> list[np.ndarray]:
    return [np.round(v, n) for v, n in zip(values, DECIMALS, strict=True)]


@dataclass(frozen=True)
class _Episodes:
    """Anomaly and maintenance plan of consecutive (slot, device) pairs from ``first``."""

    first: int
    anomalous: np.ndarray
    kind: np.ndarray
    feature: np.ndarray
    start: np.ndarray
    length: np.ndarray
    magnitude: np.ndarray
    maint: np.ndarray
    maint_start: np.ndarray
    maint_length: np.ndarray


def _episodes(spec: TelemetrySpec, first: int, stop: int) -> _Episodes:
    """Draw the episode plan for pair indices ``first..stop-1`` (pair = slot*n_devices+dev)."""
    pair = np.arange(first, stop, dtype=np.int64)
    slot = pair // spec.n_devices

    def u(stream: int) -> np.ndarray:
        return uniform(spec.seed, 200 + stream, pair)

    quiet = slot == 0
    if spec.regime_step is not None:
        regime_slot = spec.regime_step // SLOT_STEPS
        quiet |= (slot == regime_slot) | (slot == regime_slot + 1)
    anomalous = (u(0) < spec.slot_anomaly_probability()) & ~quiet
    kind = np.searchsorted(np.cumsum(KIND_WEIGHTS), u(1), side="right").clip(0, len(KINDS) - 1)
    lengths, sigmas = np.array(KIND_LENGTHS), np.array(KIND_SIGMAS)
    length = _ints_between(u(2), lengths[kind, 0], lengths[kind, 1])
    latest = SLOT_STEPS - ANOMALY_END_MARGIN - length
    start = _ints_between(u(3), ANOMALY_FIRST_OFFSET, latest)
    sign = np.where(u(4) < 0.5, -1.0, 1.0)
    magnitude = sign * (sigmas[kind, 0] + (sigmas[kind, 1] - sigmas[kind, 0]) * u(5))
    return _Episodes(
        first=first,
        anomalous=anomalous,
        kind=kind,
        feature=_ints_between(u(6), 0, len(FEATURES) - 1),
        start=start,
        length=length,
        magnitude=magnitude,
        maint=u(7) < spec.slot_maintenance_probability(),
        maint_start=_ints_between(u(8), 20, 60),
        maint_length=_ints_between(u(9), 10, 30),
    )


def _inject(
    spec: TelemetrySpec,
    dev: _Devices,
    d: np.ndarray,
    step: np.ndarray,
    values: list[np.ndarray],
    sigmas: list[np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply anomaly episodes in place; return (label kind or -1, maintenance mask, pair)."""
    pair = (step // SLOT_STEPS) * spec.n_devices + d
    plan = _episodes(spec, int(pair.min()), int(pair.max()) + 1)
    p = pair - plan.first
    offset = step % SLOT_STEPS
    pos = offset - plan.start[p]
    active = plan.anomalous[p] & (pos >= 0) & (pos < plan.length[p])
    kind, feature, mag = plan.kind[p], plan.feature[p], plan.magnitude[p]
    ramp = mag * (pos + 1) / plan.length[p]
    shift = np.select([kind == 0, kind == 1, kind == 3], [mag, mag, ramp], 0.0) * active
    for f in range(len(FEATURES)):
        values[f] += np.where(feature == f, shift * sigmas[f], 0.0)
    stuck = np.flatnonzero(active & (kind == 2))
    if len(stuck):
        frozen_step = step[stuck] - pos[stuck] - 1
        frozen, _ = _clean(spec, dev, d[stuck], frozen_step)
        frozen = _round(frozen)
        for f in range(len(FEATURES)):
            here = feature[stuck] == f
            values[f][stuck[here]] = frozen[f][here]
    labelled = active & ((kind != 3) | (np.abs(ramp) >= DRIFT_LABEL_SIGMA))
    moff = offset - plan.maint_start[p]
    maint = plan.maint[p] & (moff >= 0) & (moff < plan.maint_length[p])
    return np.where(labelled, kind, -1), maint, pair


def telemetry_rows(spec: TelemetrySpec, start: int, stop: int) -> pa.Table:
    """Rows ``start..stop-1`` of the telemetry run described by ``spec``."""
    rows = np.arange(start, max(start, stop), dtype=np.int64)
    if len(rows) == 0:
        return telemetry_schema(spec.labels).empty_table()
    d, step = rows % spec.n_devices, rows // spec.n_devices
    dev = _devices(spec)
    values, sigmas = _clean(spec, dev, d, step)
    values = _round(values)
    label_kind, maint, _ = _inject(spec, dev, d, step, values, sigmas)
    values = _round(values)
    warn = uniform(spec.seed, 7, rows) < SPURIOUS_WARNING_RATE
    for v, limit in zip(values, WARNING_LIMITS, strict=True):
        warn |= v >= limit
    status = np.where(maint, 1, np.where(warn, 2, 0))
    jitter = (uniform(spec.seed, 8, rows) * (spec.interval_us // 2)).astype(np.int64)
    ts = spec.start_us + step * spec.interval_us + d * spec.interval_us // spec.n_devices + jitter
    columns: dict[str, pa.Array] = {
        "device_id": pc.take(pa.array(device_ids(spec.n_devices)), pa.array(d)),
        "ts": pa.array(ts, type=pa.timestamp("us", tz="UTC")),
        **{name: pa.array(v) for name, v in zip(FEATURES, values, strict=True)},
        "status": pc.take(pa.array(STATUSES), pa.array(status)),
    }
    if spec.labels:
        columns["is_anomaly"] = pa.array(label_kind >= 0)
        kind_idx = pa.array(label_kind, mask=label_kind < 0)
        columns["anomaly_kind"] = pc.take(pa.array(KINDS), kind_idx)
    return pa.table(columns, schema=telemetry_schema(spec.labels))


def telemetry_schema(labels: bool = True) -> pa.Schema:
    """The Arrow schema of telemetry tables (with or without the ground-truth columns)."""
    fields = [
        pa.field("device_id", pa.string()),
        pa.field("ts", pa.timestamp("us", tz="UTC")),
        *(pa.field(f, pa.float64()) for f in FEATURES),
        pa.field("status", pa.string()),
    ]
    if labels:
        fields += [pa.field("is_anomaly", pa.bool_()), pa.field("anomaly_kind", pa.string())]
    return pa.schema(fields)


def device_ids(n_devices: int) -> list[str]:
    """Device names ``dev-0000`` .. (zero-padded to at least four digits)."""
    width = max(4, len(str(n_devices - 1)))
    return [f"dev-{i:0{width}d}" for i in range(n_devices)]


def telemetry_spec(
    n_events: int | None,
    n_devices: int = 50,
    seed: int = 0,
    start: datetime = DEFAULT_START,
    interval: str = "1s",
    regime_change_at: float | None = 0.6,
    anomaly_rate: float = 0.01,
    maintenance_rate: float = 0.02,
    labels: bool = True,
) -> TelemetrySpec:
    """Build a :class:`TelemetrySpec`; the regime step is ``regime_change_at`` of the run."""
    if n_devices < 1:
        raise ValueError("n_devices must be at least 1")
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    regime_step = None
    if regime_change_at is not None and n_events is not None:
        regime_step = int(regime_change_at * math.ceil(n_events / n_devices))
    delta = start - datetime(1970, 1, 1, tzinfo=UTC)
    start_us = delta.days * 86_400_000_000 + delta.seconds * 1_000_000 + delta.microseconds
    return TelemetrySpec(
        n_devices=n_devices,
        seed=seed,
        start_us=start_us,
        interval_us=duration_us(interval),
        regime_step=regime_step,
        anomaly_rate=anomaly_rate,
        maintenance_rate=maintenance_rate,
        labels=labels,
    )


def telemetry(
    n_events: int,
    n_devices: int = 50,
    seed: int = 0,
    start: datetime = DEFAULT_START,
    interval: str = "1s",
    regime_change_at: float | None = 0.6,
    anomaly_rate: float = 0.01,
    maintenance_rate: float = 0.02,
    labels: bool = True,
) -> pa.Table:
    """IoT telemetry of ``n_devices`` devices with labelled anomalies and a regime change.

    Columns: ``device_id`` (``dev-0007``), ``ts`` (timestamp[us, UTC]; device ``d``'s step
    ``k`` is at ``start + k*interval + d*interval/n_devices + jitter`` with jitter in
    [0, interval/2): increasing per device, slightly out of order across devices),
    ``temperature`` (°F, per-device baseline 60-80, ±3 °F seasonal cycle every 1440 steps,
    noise sigma 0.8-1.2), ``pressure`` (kPa, baseline 95-110, follows the season, noise
    correlated with temperature's, sigma 0.4-0.6), ``vibration`` (mm/s, 1.5-3.0, sigma
    0.06-0.10), ``status`` (``maintenance`` in maintenance windows, else ``warning`` when a
    reading crosses a device alarm limit or at random 0.1% of the time, else ``ok``), and with
    ``labels`` the ground truth ``is_anomaly`` and ``anomaly_kind``.

    Label definitions (sigma = that feature's noise sigma at that moment). Each device's
    steps are cut into slots of 400; a slot holds at most one episode on one feature,
    starting at slot offset >= 120 and ending >= 20 steps before the slot ends:

    * ``spike``: one event offset by 6-10 sigma (either sign); that event is labelled.
    * ``level_shift``: 20-50 consecutive events offset by 5-8 sigma; all are labelled.
    * ``stuck``: for 30-60 events the feature repeats exactly the reading of the event just
      before the episode; all of them are labelled.
    * ``drift``: a linear ramp over 80-120 events from 0 to 6-9 sigma, after which the value
      snaps back; labelled from the first event whose offset is >= 3 sigma to the ramp's end.

    Regime change: from per-device step ``int(regime_change_at * ceil(n_events/n_devices))``
    every device's temperature rises 6-10 °F, pressure 3-6 kPa, vibration 0.2-0.5 mm/s, and
    the noise grows 30% (vibration 50%). It is not labelled. No episode is injected in a
    device's first slot (detector warm-up) nor in the slot holding the change and the next.
    Maintenance windows (10-30 events starting at offsets 20-60) never overlap episodes; readings
    there are normal. ``anomaly_rate`` is the expected fraction of labelled events before
    those quiet slots are removed.
    """
    spec = telemetry_spec(
        n_events,
        n_devices,
        seed,
        start,
        interval,
        regime_change_at,
        anomaly_rate,
        maintenance_rate,
        labels,
    )
    return telemetry_rows(spec, 0, n_events)


def telemetry_chunks(
    n_events: int,
    n_devices: int = 50,
    seed: int = 0,
    start: datetime = DEFAULT_START,
    interval: str = "1s",
    regime_change_at: float | None = 0.6,
    anomaly_rate: float = 0.01,
    maintenance_rate: float = 0.02,
    labels: bool = True,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Iterator[pa.Table]:
    """:func:`telemetry` in chunks of ``chunk_rows``; their concatenation equals it exactly."""
    spec = telemetry_spec(
        n_events,
        n_devices,
        seed,
        start,
        interval,
        regime_change_at,
        anomaly_rate,
        maintenance_rate,
        labels,
    )
    for first in range(0, n_events, chunk_rows):
        yield telemetry_rows(spec, first, min(n_events, first + chunk_rows))


# -- reference data -----------------------------------------------------------------------

SITES = ("plant-berlin", "plant-lyon", "plant-austin", "plant-osaka", "plant-sao-paulo")
MODELS = ("TX-100", "TX-200", "VX-3", "HX-9 Pro")


def devices(n_devices: int = 50, seed: int = 0) -> pa.Table:
    """A device reference table (``device_id``, ``site``, ``model``, ``installed``)."""
    idx = np.arange(n_devices, dtype=np.int64)
    site = np.floor(uniform(seed, 400, idx) * len(SITES)).astype(np.int64)
    model = np.floor(uniform(seed, 401, idx) * len(MODELS)).astype(np.int64)
    days = (DEFAULT_START.date().toordinal() - 1 - np.floor(uniform(seed, 402, idx) * 1500)).astype(
        np.int64
    ) - datetime(1970, 1, 1).toordinal()
    return pa.table(
        {
            "device_id": pa.array(device_ids(n_devices)),
            "site": pc.take(pa.array(SITES), pa.array(site)),
            "model": pc.take(pa.array(MODELS), pa.array(model)),
            "installed": pa.array(days.astype(np.int32), type=pa.date32()),
        }
    )


# -- JSON lines ---------------------------------------------------------------------------


def write_jsonl(data: pa.Table | Iterable[pa.Table], path: str | Path) -> Path:
    """Write a table (or an iterable of tables, consumed lazily) as JSON lines.

    DuckDB serialises each table (``to_json`` per row, in parallel); timestamps become
    ISO-8601 strings with microseconds and ``Z``. Memory stays bounded by one table.
    """
    import duckdb

    tables = [data] if isinstance(data, pa.Table) else data
    path = Path(path)
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        with path.open("wb") as out:
            for table in tables:
                if table.num_rows:
                    _write_json_rows(con, table, out)
    finally:
        con.close()
    return path


def _write_json_rows(con: duckdb.DuckDBPyConnection, table: pa.Table, out: BinaryIO) -> None:
    """Append ``table`` to ``out`` as JSON lines (the Arrow string buffer, written as is)."""
    columns = ", ".join(_json_column(field) for field in table.schema)
    query = f"SELECT to_json(r)::VARCHAR || chr(10) AS line FROM (SELECT {columns} FROM t) r"
    relation = con.from_arrow(table).query("t", query)
    assert relation is not None  # a SELECT always yields a relation
    result = relation.to_arrow_table().column(0)
    for chunk in result.chunks:
        chunk = chunk.cast(pa.large_string())
        offsets = np.frombuffer(
            chunk.buffers()[1], dtype=np.int64, count=len(chunk) + 1, offset=chunk.offset * 8
        )
        out.write(memoryview(chunk.buffers()[2])[int(offsets[0]) : int(offsets[-1])])


def _json_column(field: pa.Field) -> str:
    name = '"' + field.name.replace('"', '""') + '"'
    if pa.types.is_timestamp(field.type):
        utc = f"{name}::TIMESTAMP" if field.type.tz is None else f"timezone('UTC', {name})"
        return f"strftime({utc}, '%Y-%m-%dT%H:%M:%S.%fZ') AS {name}"
    return name
