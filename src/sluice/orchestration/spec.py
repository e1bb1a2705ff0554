"""The jobs file: DAGs of tasks with dependencies, schedules and retry policies."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sluice.config.loader import Path_, load_model, parse_yaml, validation_error
from sluice.core.errors import ConfigError, NotFoundError
from sluice.core.types import parse_duration

TaskType = Literal[
    "run_pipeline",
    "train_model",
    "evaluate_model",
    "promote_if_better",
    "compact",
    "export",
    "quality_check",
    "sql",
    "shell",
]
COMMON_TASK_KEYS = {"name", "type", "depends_on", "retries", "retry_delay", "timeout"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _duration(value: Any) -> Any:
    if value is None:
        return value
    try:
        parse_duration(value)
    except ConfigError as exc:
        raise ValueError(exc.detail) from None
    return value


class ScheduleSpec(_Strict):
    """When a job runs: a cron expression or a fixed interval, in a time zone."""

    cron: str | None = None
    every: str | None = None
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str | None) -> str | None:
        from croniter import croniter

        if value is not None and not croniter.is_valid(value):
            raise ValueError(f"invalid cron expression {value!r}")
        return value

    @field_validator("every")
    @classmethod
    def _check_every(cls, value: str | None) -> str | None:
        _duration(value)
        if value is not None and parse_duration(value) <= timedelta(0):
            raise ValueError("every must be positive")
        return value

    @field_validator("timezone")
    @classmethod
    def _check_tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @property
    def tz(self) -> ZoneInfo:
        """The schedule's time zone."""
        return ZoneInfo(self.timezone)


class TaskSpec(BaseModel):
    """One task of a job; type-specific keys are kept in ``options``."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=200)
    type: TaskType
    depends_on: list[str] = Field(default_factory=list)
    retries: int | None = Field(default=None, ge=0)
    retry_delay: str | float | None = None
    timeout: str | float | None = None

    _v_delay = field_validator("retry_delay", "timeout")(classmethod(lambda cls, v: _duration(v)))

    @property
    def options(self) -> dict[str, Any]:
        """The type-specific keys of this task."""
        return dict(self.model_extra or {})


class JobSpec(_Strict):
    """A job: a DAG of tasks with a schedule and a retry/timeout policy."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=200)
    description: str = ""
    schedule: ScheduleSpec | None = None
    timezone: str | None = None
    start_date: datetime | None = None
    catchup: bool = False
    max_active_runs: int = Field(default=1, ge=1)
    retries: int = Field(default=0, ge=0)
    retry_delay: str | float = "30s"
    timeout: str | float | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    allow_shell: bool = False
    tasks: list[TaskSpec] = Field(min_length=1)

    _v_delay = field_validator("retry_delay", "timeout")(classmethod(lambda cls, v: _duration(v)))

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("every "):
                return {"every": text.removeprefix("every ").strip()}
            return {"cron": text}
        return value

    @property
    def schedule_spec(self) -> ScheduleSpec | None:
        """The normalised schedule (job-level ``timezone`` applied), or None for manual jobs."""
        spec = self.schedule
        if spec is None:
            return None
        if self.timezone and spec.timezone == "UTC":
            return spec.model_copy(update={"timezone": self.timezone})
        return spec

    def check_params(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """``given`` checked against the declared ``params`` (names, and the defaults' types).

        Raises ConfigError (a 400 through the API) for an undeclared name or a wrong type.
        """
        for name, value in (given or {}).items():
            if name not in self.params:
                declared = ", ".join(sorted(self.params)) or "none"
                raise ConfigError(
                    f"job {self.name!r} declares no param {name!r} (declared: {declared})",
                    key=f"params.{name}",
                )
            expected = _param_type(self.params[name])
            if not _has_type(value, expected):
                raise ConfigError(
                    f"job {self.name!r}: param {name!r} must be {expected}, "
                    f"got {type(value).__name__}",
                    key=f"params.{name}",
                )
        return dict(given or {})

    def task(self, name: str) -> TaskSpec:
        """The task called ``name``."""
        for task in self.tasks:
            if task.name == name:
                return task
        raise NotFoundError(f"job {self.name!r} has no task {name!r}")

    def task_retries(self, task: TaskSpec) -> int:
        """Retries of ``task`` (its own, else the job's)."""
        return self.retries if task.retries is None else task.retries

    def task_retry_delay(self, task: TaskSpec) -> timedelta:
        """First retry delay of ``task`` (doubled after each failed attempt)."""
        return parse_duration(
            task.retry_delay if task.retry_delay is not None else self.retry_delay
        )

    def task_timeout(self, task: TaskSpec) -> float | None:
        """Timeout of one attempt of ``task`` in seconds, or None."""
        value = task.timeout if task.timeout is not None else self.timeout
        return None if value is None else parse_duration(value).total_seconds()

    def topological_order(self) -> list[TaskSpec]:
        """Tasks ordered so every task follows its dependencies (file order otherwise)."""
        done: set[str] = set()
        ordered: list[TaskSpec] = []
        pending = list(self.tasks)
        while pending:
            ready = next((t for t in pending if set(t.depends_on) <= done), None)
            if ready is None:
                raise ConfigError(f"job {self.name!r}: tasks form a dependency cycle")
            ordered.append(ready)
            done.add(ready.name)
            pending.remove(ready)
        return ordered


_PARAM_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (list, "a list"),
    (dict, "an object"),
)


def _param_type(default: Any) -> str:
    """What a param's declared default says its values must be."""
    for python, name in _PARAM_TYPES:
        if isinstance(default, python):
            return name
    return "a string, a number, a boolean or null"


def _has_type(value: Any, expected: str) -> bool:
    if expected == "a number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected == "an integer":
        return isinstance(value, int) and not isinstance(value, bool)
    for python, name in _PARAM_TYPES:
        if name == expected:
            return isinstance(value, python)
    return value is None or isinstance(value, str | int | float)


class JobsFile(_Strict):
    """A jobs file: ``jobs:`` followed by a list of jobs."""

    jobs: list[JobSpec] = Field(default_factory=list)
    source_file: str | None = Field(default=None, exclude=True)

    def job(self, name: str) -> JobSpec:
        """The job called ``name`` or NotFoundError."""
        for job in self.jobs:
            if job.name == name:
                return job
        known = ", ".join(j.name for j in self.jobs) or "none"
        raise NotFoundError(f"no job named {name!r} (jobs: {known})")


def load_jobs(path: str | Path) -> JobsFile:
    """Read and validate a jobs YAML file."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such file", file=file) from None
    return jobs_from_text(text, file)


def jobs_from_text(text: str, file: str = "<string>") -> JobsFile:
    """Validate jobs YAML given as text (task options, dependencies and cycles included)."""
    data, lines = parse_yaml(text, file)
    if not isinstance(data, dict) or "jobs" not in data:
        raise ConfigError("a jobs file is a mapping with a `jobs:` list", file=file, line=1)
    data = {"jobs": data["jobs"]}  # a pipeline file may carry jobs beside its other keys
    jobs = load_model(JobsFile, data, lines, file)
    jobs.source_file = file
    _check_names(jobs, lines, file)
    for j, job in enumerate(jobs.jobs):
        _check_job(job, j, lines, file)
    return jobs


def _check_names(jobs: JobsFile, lines: dict[Path_, int], file: str) -> None:
    seen: set[str] = set()
    for j, job in enumerate(jobs.jobs):
        if job.name in seen:
            raise ConfigError(
                f"duplicate job name {job.name!r}",
                file=file,
                line=lines.get(("jobs", j, "name")),
                key=f"jobs[{j}].name",
            )
        seen.add(job.name)


def _check_job(job: JobSpec, j: int, lines: dict[Path_, int], file: str) -> None:
    from sluice.orchestration.tasks import OPTION_MODELS

    names = [t.name for t in job.tasks]
    for t, task in enumerate(job.tasks):
        where: Path_ = ("jobs", j, "tasks", t)
        if names.count(task.name) > 1:
            raise ConfigError(
                f"duplicate task name {task.name!r}",
                file=file,
                line=lines.get((*where, "name")),
                key=f"jobs[{j}].tasks[{t}].name",
            )
        for dep in task.depends_on:
            if dep not in names or dep == task.name:
                raise ConfigError(
                    f"unknown dependency {dep!r} (tasks: {', '.join(names)})",
                    file=file,
                    line=lines.get((*where, "depends_on")),
                    key=f"jobs[{j}].tasks[{t}].depends_on",
                )
        if task.type == "shell" and not job.allow_shell:
            raise ConfigError(
                "shell tasks are off; set `allow_shell: true` on the job to allow them",
                file=file,
                line=lines.get((*where, "type")),
                key=f"jobs[{j}].tasks[{t}].type",
            )
        try:
            OPTION_MODELS[task.type].model_validate(task.options)
        except ValidationError as exc:
            raise validation_error(exc, lines, file, prefix=where) from None
    try:
        job.topological_order()
    except ConfigError as exc:
        raise ConfigError(
            exc.detail, file=file, line=lines.get(("jobs", j, "tasks")), key=f"jobs[{j}].tasks"
        ) from None
