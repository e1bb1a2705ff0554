"""Pipeline files: validation errors name file, line and key; env interpolation; Python API."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.config.loader import interpolate, load_pipeline, pipeline_from_text
from sluice.config.models import Pipeline
from sluice.core.errors import ConfigError
from sluice.core.settings import Settings

GOOD = """\
name: telemetry
source: {type: file, path: "${DATA_DIR:-data}/x.jsonl", format: json}
schema:
  device_id: {type: string, required: true}
  ts: timestamp
  temperature: double
event_time: ts
transforms:
  - derive: {temp_c: "(temperature - 32) * 5 / 9"}
  - enrich: {path: devices.csv, on: device_id}
sinks:
  - {type: lake, table: telemetry}
"""


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        pipeline_from_text(text, "pipeline.yaml")
    return str(info.value)


def test_good_file_and_python_api_build_the_same_object(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATA_DIR", raising=False)
    from_yaml = pipeline_from_text(GOOD)
    assert from_yaml.source.options["path"] == "data/x.jsonl"
    assert from_yaml.transforms[1].enrich is not None
    assert from_yaml.transforms[1].enrich.on == "device_id"  # YAML 1.1 'on' stays a key
    assert from_yaml.fields["ts"].required  # event_time is required
    from_python = Pipeline.model_validate(from_yaml.model_dump(by_alias=True))
    assert from_python.model_dump() == from_yaml.model_dump()


def test_env_interpolation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATA_DIR", "/srv/in")
    assert pipeline_from_text(GOOD).source.options["path"] == "/srv/in/x.jsonl"
    assert interpolate("$${KEEP} ${MISSING:-d}", {}) == "${KEEP} d"
    message = _error(GOOD.replace("${DATA_DIR:-data}", "${NOT_SET_ANYWHERE}"))
    assert message.startswith("pipeline.yaml:2: source.path: environment variable NOT_SET")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("size: 1m", "size: 1mn"),
            "pipeline.yaml:10: transforms[1].window.size: invalid duration",
        ),
        (("- derive:", "- derivee:"), "pipeline.yaml:9: transforms[0]: a transform step is one of"),
        (("temperature: double", "temperature: float"), "pipeline.yaml:3: schema: column"),
        (("name: telemetry", "nom: telemetry"), "pipeline.yaml:1: nom: unknown key"),
        (("event_time: ts", "event_time: when"), "event_time 'when' is not a column"),
    ],
)
def test_errors_name_file_line_and_key(change: tuple[str, str], expected: str) -> None:
    text = GOOD.replace(
        "  - enrich: {path: devices.csv, on: device_id}",
        "  - window: {key: device_id, size: 1m, aggregate: {n: count(*)}}",
    )
    assert change[0] in text
    assert expected in _error(text.replace(*change))


def test_yaml_syntax_error_and_empty_file(tmp_path: Path) -> None:
    assert _error("name: [unclosed\n").startswith("pipeline.yaml:2: invalid YAML")
    assert "empty" in _error("")
    with pytest.raises(ConfigError, match="no such file"):
        load_pipeline(tmp_path / "missing.yaml")


def test_names_fit_the_metadata_columns() -> None:
    message = _error(GOOD.replace("name: telemetry", f"name: {'t' * 101}"))
    assert "pipeline.yaml:1: name: " in message and "longer than 100 characters" in message
    assert pipeline_from_text(GOOD.replace("name: telemetry", f"name: {'t' * 100}"))


@pytest.mark.parametrize(
    ("sinks", "expected"),
    [
        ("sinks: [{type: lake, table: ../../outside}]", "pipeline.yaml:11: sinks[0]: "),
        ("sinks: [{type: lake, table: 'a/b'}]", "lake table 'a/b' must be a plain name"),
        ("sinks: [{type: lake, table: '..'}]", "lake table '..' must be a plain name"),
        ("sinks: [{type: lake, table: '/srv/lake/../x'}]", "without '..'"),
        ("sinks: [{type: lake, table: 's3://b/p/../../x'}]", "without '..'"),
        ("dead_letter: {table: ../dl}", "pipeline.yaml:11: dead_letter.table: dead-letter table"),
        ("dead_letter: {table: 'x\\y'}", "dead-letter table 'x\\\\y' must be a plain name"),
    ],
)
def test_lake_and_dead_letter_tables_cannot_leave_the_lake(sinks: str, expected: str) -> None:
    text = GOOD.replace("sinks:\n  - {type: lake, table: telemetry}", sinks)
    assert expected in _error(text)


def test_plain_and_located_lake_tables_are_fine(tmp_path: Path) -> None:
    for table in ("telemetry_1m", "/srv/lake/telemetry", "s3://bucket/prefix/telemetry"):
        text = GOOD.replace("table: telemetry}", f"table: '{table}'}}")
        assert pipeline_from_text(text).sinks[0].table == table
    with pytest.raises(ConfigError, match=r"'\.\.' is not allowed"):
        Settings(home=tmp_path).lake_path("../escape")
