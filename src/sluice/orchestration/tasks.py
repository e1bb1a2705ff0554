"""Built-in task types: their options, templating, and what each one does."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sluice.actions.base import JobRunner
from sluice.core.errors import ConfigError, PermanentError, SluiceError
from sluice.core.settings import Settings
from sluice.core.types import parse_duration


class TaskFailedError(SluiceError):
    """A task ran and its outcome is a failure (a check did not hold, a command failed)."""


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunPipelineOptions(_Options):
    """``run_pipeline``: a batch run of a pipeline file until its source is idle."""

    pipeline: str
    template: bool = False  # render the pipeline file with the data-interval variables
    max_epochs: int | None = None
    idle_timeout: float = 2.0


class TrainModelOptions(_Options):
    """``train_model``: train a candidate version from a table."""

    model: str
    kind: str
    table: str
    features: list[str] = Field(default_factory=list)
    label: str | None = None
    time_column: str | None = None
    since: str | None = None
    until: str | None = None
    seed: int = 0
    params: dict[str, Any] = Field(default_factory=dict)


class EvaluateModelOptions(_Options):
    """``evaluate_model``: score a labelled table; optional minimum metrics fail the task."""

    model: str
    table: str
    label: str
    minimum: dict[str, float] = Field(default_factory=dict)


class PromoteOptions(_Options):
    """``promote_if_better``: promote the newest version when its metric beats production."""

    model: str
    metric: str
    higher_is_better: bool = True
    min_improvement: float = 0.0


class CompactOptions(_Options):
    """``compact``: Delta optimize (small files → large) then vacuum of a lake table."""

    table: str
    vacuum: bool = True
    retention_hours: int = Field(default=168, ge=0)
    target_size: int | None = None


class ExportOptions(_Options):
    """``export``: copy a lake table (or a query over it) to a Parquet file or warehouse table."""

    table: str | None = None
    query: str | None = None
    to: Literal["parquet", "warehouse"] = "parquet"
    path: str | None = None
    target_table: str | None = None


class Freshness(_Options):
    """The newest ``column`` value must be at most ``max_age`` old."""

    column: str
    max_age: str


class QualityCheckOptions(_Options):
    """``quality_check``: row count, no nulls, freshness and custom SQL assertions."""

    table: str
    min_rows: int | None = None
    not_null: list[str] = Field(default_factory=list)
    freshness: Freshness | None = None
    assertions: list[str] = Field(default_factory=list)  # SQL returning rows = violations


class SqlOptions(_Options):
    """``sql``: run a read-only query over the lake and warehouse."""

    sql: str


class ShellOptions(_Options):
    """``shell``: run a command (only on jobs with ``allow_shell: true``)."""

    command: str
    cwd: str | None = None
    env: dict[str, str] = Field(default_factory=dict)


OPTION_MODELS: dict[str, type[_Options]] = {
    "run_pipeline": RunPipelineOptions,
    "train_model": TrainModelOptions,
    "evaluate_model": EvaluateModelOptions,
    "promote_if_better": PromoteOptions,
    "compact": CompactOptions,
    "export": ExportOptions,
    "quality_check": QualityCheckOptions,
    "sql": SqlOptions,
    "shell": ShellOptions,
}


@dataclass
class TaskContext:
    """What a running task sees: settings, interval variables, a log, its timeout."""

    settings: Settings
    job: str
    task: str
    variables: dict[str, Any]
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    timeout: float | None = None
    lines: list[str] = field(default_factory=list)
    job_runner: JobRunner | None = None  # for the run_job actions of pipelines it runs

    def log(self, message: str) -> None:
        """Append a line to this attempt's log."""
        self.lines.append(message)


def template_variables(
    job: str, start: datetime, end: datetime, params: dict[str, Any], run_id: int | None = None
) -> dict[str, Any]:
    """The ``{{ ds }}``-style variables of a data interval."""
    return {
        "ds": start.strftime("%Y-%m-%d"),
        "ds_nodash": start.strftime("%Y%m%d"),
        "data_interval_start": start.isoformat(),
        "data_interval_end": end.isoformat(),
        "ts": start.isoformat(),
        "params": params,
        "job": job,
        "run_id": run_id,
    }


def render(
    value: Any, variables: dict[str, Any], finalize: Callable[[Any], Any] | None = None
) -> Any:
    """Render every string inside ``value`` with sandboxed Jinja2 (undefined names fail).

    ``finalize`` sees the value of every ``{{ ... }}`` expression before it is written.
    """
    from jinja2 import StrictUndefined, TemplateError
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, finalize=finalize)

    def walk(item: Any) -> Any:
        if isinstance(item, str) and ("{{" in item or "{%" in item):
            try:
                return env.from_string(item).render(**variables)
            except TemplateError as exc:
                raise ConfigError(f"template {item!r}: {exc}") from None
        if isinstance(item, dict):
            return {k: walk(v) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v) for v in item]
        return item

    return walk(value)


# Options that name files: a templated one must stay under its literal directory.
PATH_OPTIONS: dict[str, tuple[str, ...]] = {
    "export": ("path",),
    "run_pipeline": ("pipeline",),
    "shell": ("cwd",),
}
# What a template may write into a shell command or a templated pipeline file: characters
# no shell treats specially (the set ``shlex.quote`` leaves unquoted), no quotes, brackets
# or spaces, so a value can never become syntax (shell, YAML or SQL).
_INERT = re.compile(r"[\w@%+=:,./-]*", re.ASCII)


def execute_task(task_type: str, options: dict[str, Any], ctx: TaskContext) -> None:
    """Validate rendered ``options`` for ``task_type`` and run the task."""
    rendered = render(options, ctx.variables)
    if task_type == "shell" and "command" in options:
        rendered["command"] = render(options["command"], ctx.variables, _SHELL_WORD)
    for key in PATH_OPTIONS.get(task_type, ()):
        if isinstance(options.get(key), str) and isinstance(rendered.get(key), str):
            rendered[key] = contained_path(options[key], rendered[key])
    parsed = OPTION_MODELS[task_type].model_validate(rendered)
    RUNNERS[task_type](parsed, ctx)


def _inert(what: str, hint: str = "") -> Callable[[Any], str]:
    """A Jinja ``finalize`` refusing values that could be syntax (not data) in ``what``."""

    def check(value: Any) -> str:
        text = "" if value is None else str(value)
        if not _INERT.fullmatch(text):
            raise ConfigError(
                f"{what}: the value {text[:80]!r} has characters that could change its syntax; "
                f"only letters, digits and _@%+=:,./- are written into it.{hint}"
            )
        return text

    return check


_SHELL_WORD = _inert(
    "shell command",
    ' Read params from the environment instead, e.g. "$SLUICE_PARAM_NAME"',
)


def contained_path(template: str, rendered: str) -> str:
    """``rendered``, checked to stay under the directory written before ``template``'s first tag.

    ``exports/{{ ds }}.parquet`` may become any file under ``exports/``, never ``../x`` or
    an absolute path elsewhere. A path without template tags is the operator's, unchecked.
    """
    cut = min((i for i in (template.find("{{"), template.find("{%")) if i >= 0), default=-1)
    if cut < 0:
        return rendered
    literal = template[:cut]
    root = Path(literal[: literal.rfind("/") + 1] or ".").resolve()
    target = Path(rendered).resolve()
    if target != root and not target.is_relative_to(root):
        raise ConfigError(
            f"path {rendered!r} (from {template!r}) leaves {str(root)!r}: templated paths "
            "must stay under the directory written before their first {{ }}"
        )
    return rendered


def param_environment(params: dict[str, Any]) -> dict[str, str]:
    """Every param as ``SLUICE_PARAM_<NAME>`` (strings as they are, other values as JSON)."""
    import orjson

    return {
        "SLUICE_PARAM_" + re.sub(r"\W", "_", name, flags=re.ASCII).upper(): (
            value if isinstance(value, str) else orjson.dumps(value).decode()
        )
        for name, value in params.items()
    }


def _run_pipeline(opts: Any, ctx: TaskContext) -> None:
    from sluice.config.loader import pipeline_from_text
    from sluice.runners.create import create_runner

    path = Path(opts.pipeline)
    text = path.read_text(encoding="utf-8")
    if opts.template:
        text = render(text, ctx.variables, _inert(f"pipeline file {str(path)!r}"))
    pipeline = pipeline_from_text(text, str(path))
    runner = create_runner(
        pipeline,
        ctx.settings,
        until_idle=True,
        idle_timeout=opts.idle_timeout,
        job_runner=ctx.job_runner,
    )
    try:
        stats = runner.run(max_epochs=opts.max_epochs)
    finally:
        runner.close()
    ctx.log(f"pipeline {pipeline.name}: {stats}")


def _train_model(opts: Any, ctx: TaskContext) -> None:
    from sluice.models.train import TrainSpec, train

    version = train(
        ctx.settings,
        TrainSpec(
            name=opts.model,
            kind=opts.kind,
            table=opts.table,
            features=opts.features,
            label=opts.label,
            time_column=opts.time_column,
            since=opts.since,
            until=opts.until,
            seed=opts.seed,
            params=opts.params,
        ),
    )
    ctx.log(f"trained {version.name} v{version.version}: metrics {version.metrics}")


def _evaluate_model(opts: Any, ctx: TaskContext) -> None:
    from sluice.evaluation.registered import evaluate_registered

    metrics = evaluate_registered(ctx.settings, opts.model, opts.table, opts.label)
    ctx.log(f"evaluated {opts.model}: {metrics}")
    low = {
        k: metrics.get(k)
        for k, floor in opts.minimum.items()
        if not isinstance(metrics.get(k), int | float) or metrics[k] < floor
    }
    if low:
        raise TaskFailedError(
            f"{opts.model}: metrics below their minimum: {low} (minimum {opts.minimum})"
        )


def _promote_if_better(opts: Any, ctx: TaskContext) -> None:
    from sluice.models.registry import ModelRegistry

    registry = ModelRegistry(ctx.settings)
    newest = max(registry.list(opts.model), key=lambda v: v.version, default=None)
    if newest is None:
        raise PermanentError(f"model {opts.model!r} has no versions")
    current = registry.production(opts.model)
    if current is not None and current.version == newest.version:
        ctx.log(f"v{newest.version} is already production")
        return
    value = newest.metrics.get(opts.metric)
    if not isinstance(value, int | float):
        raise TaskFailedError(f"v{newest.version} has no metric {opts.metric!r}")
    if current is not None:
        base = current.metrics.get(opts.metric)
        if isinstance(base, int | float):
            gain = value - base if opts.higher_is_better else base - value
            if gain <= opts.min_improvement:
                ctx.log(f"kept v{current.version}: {opts.metric} {value} vs {base}")
                return
    registry.promote(opts.model, newest.version)
    ctx.log(f"promoted {opts.model} v{newest.version} ({opts.metric}={value})")


def _compact(opts: Any, ctx: TaskContext) -> None:
    from sluice.storage.lake_tables import open_lake_table

    table = open_lake_table(ctx.settings, opts.table)
    result = table.optimize.compact(target_size=opts.target_size)
    ctx.log(f"optimize {opts.table}: {result}")
    if opts.vacuum:
        removed = table.vacuum(
            retention_hours=opts.retention_hours,
            dry_run=False,
            enforce_retention_duration=opts.retention_hours >= 168,
        )
        ctx.log(f"vacuum {opts.table}: removed {len(removed)} files")


def _export(opts: Any, ctx: TaskContext) -> None:
    from sluice.storage.query import QueryEngine

    if not (opts.table or opts.query):
        raise ConfigError("export needs `table` or `query`")
    sql = opts.query or f'SELECT * FROM "{_plain(opts.table)}"'
    data = QueryEngine(ctx.settings, timeout=ctx.timeout).query(sql)
    if opts.to == "parquet":
        import pyarrow.parquet as pq

        if not opts.path:
            raise ConfigError("export to parquet needs `path`")
        Path(opts.path).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(data, opts.path)
        ctx.log(f"wrote {data.num_rows} rows to {opts.path}")
        return
    _export_warehouse(data, opts.target_table or opts.table, ctx)


def _export_warehouse(data: Any, target: str | None, ctx: TaskContext) -> None:
    from sluice.config.models import SinkConfig
    from sluice.sinks.base import SinkContext
    from sluice.sinks.warehouse import WarehouseSink

    if not target:
        raise ConfigError("export to warehouse needs `target_table`")
    config = SinkConfig.model_validate({"type": "warehouse", "table": target})
    sink = WarehouseSink(config, SinkContext(f"job:{ctx.job}:{ctx.task}", ctx.settings, None))
    try:
        epoch = int(datetime.fromisoformat(ctx.variables["data_interval_start"]).timestamp())
        written = sink.write(data, epoch)
    finally:
        sink.close()
    ctx.log(f"{'wrote' if written else 'already held'} {data.num_rows} rows in {target}")


def _plain(name: str) -> str:
    if not name.replace("_", "").replace(".", "").isalnum():
        raise ConfigError(f"invalid table or column name {name!r}")
    return name


def _quality_check(opts: Any, ctx: TaskContext) -> None:
    from sluice.storage.query import QueryEngine

    engine = QueryEngine(ctx.settings, timeout=ctx.timeout)
    table = f'"{_plain(opts.table)}"'
    failures: list[str] = []
    if opts.min_rows is not None:
        count = engine.query(f"SELECT count(*) AS n FROM {table}").column("n")[0].as_py()
        ctx.log(f"rows: {count}")
        if count < opts.min_rows:
            failures.append(f"{opts.table} has {count} rows, expected at least {opts.min_rows}")
    for column in opts.not_null:
        nulls = (
            engine.query(f'SELECT count(*) AS n FROM {table} WHERE "{_plain(column)}" IS NULL')
            .column("n")[0]
            .as_py()
        )
        if nulls:
            failures.append(f"{opts.table}.{column} has {nulls} null values")
    if opts.freshness is not None:
        failures += _freshness(engine, table, opts.freshness, ctx)
    for sql in opts.assertions:
        bad = engine.query(sql, limit=5)
        if bad.num_rows:
            failures.append(f"assertion returned rows: {sql!r}: {bad.to_pylist()}")
    if failures:
        raise TaskFailedError("quality check failed: " + "; ".join(failures))
    ctx.log("all checks passed")


def _freshness(engine: Any, table: str, fresh: Freshness, ctx: TaskContext) -> list[str]:
    newest = (
        engine.query(f'SELECT max("{_plain(fresh.column)}") AS t FROM {table}')
        .column("t")[0]
        .as_py()
    )
    if newest is None:
        return [f"{table} has no {fresh.column} values (freshness)"]
    if newest.tzinfo is None:
        newest = newest.replace(tzinfo=UTC)
    age = ctx.now - newest
    ctx.log(f"newest {fresh.column}: {newest.isoformat()} (age {age})")
    if age > parse_duration(fresh.max_age):
        return [f"newest {fresh.column} is {age} old, more than {fresh.max_age}"]
    return []


def _sql(opts: Any, ctx: TaskContext) -> None:
    from sluice.storage.query import QueryEngine

    result = QueryEngine(ctx.settings, timeout=ctx.timeout).query(opts.sql, limit=20)
    ctx.log(f"{result.num_rows} rows: {result.to_pylist()}")


def _shell(opts: Any, ctx: TaskContext) -> None:
    env = {
        **os.environ,
        **opts.env,
        "SLUICE_DS": ctx.variables["ds"],
        "SLUICE_DATA_INTERVAL_START": ctx.variables["data_interval_start"],
        "SLUICE_DATA_INTERVAL_END": ctx.variables["data_interval_end"],
        **param_environment(ctx.variables.get("params") or {}),
    }
    try:
        done = subprocess.run(
            opts.command,
            shell=True,
            cwd=opts.cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=ctx.timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise TaskFailedError(f"command timed out after {ctx.timeout}s (killed)") from None
    ctx.log(done.stdout[-20_000:] + done.stderr[-20_000:])
    if done.returncode != 0:
        raise TaskFailedError(f"command exited with status {done.returncode}")


RUNNERS: dict[str, Callable[[Any, TaskContext], None]] = {
    "run_pipeline": _run_pipeline,
    "train_model": _train_model,
    "evaluate_model": _evaluate_model,
    "promote_if_better": _promote_if_better,
    "compact": _compact,
    "export": _export,
    "quality_check": _quality_check,
    "sql": _sql,
    "shell": _shell,
}
