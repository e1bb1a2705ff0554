"""Load pipeline files: YAML with line numbers, ``${VAR:-default}`` interpolation, clear errors."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from sluice.config.models import Pipeline
from sluice.core.errors import ConfigError

_VAR = re.compile(r"\$?\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
M = TypeVar("M", bound=BaseModel)
Path_ = tuple[str | int, ...]


def interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}`` from the environment; ``$${VAR}`` escapes."""
    env = os.environ if env is None else env  # type: ignore[assignment]

    def sub(match: re.Match[str]) -> str:
        if match.group(0).startswith("$$"):
            return match.group(0)[1:]
        name, default = match.group(1), match.group(2)
        if name in env:  # type: ignore[operator]
            return env[name]  # type: ignore[index]
        if default is not None:
            return default
        raise KeyError(name)

    return _VAR.sub(sub, text)


def _build(node: yaml.Node, path: Path_, lines: dict[Path_, int], file: str) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _key(key_node)
            lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _build(value_node, (*path, key), lines, file)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), lines, file) for i, item in enumerate(node.value)]
    value = yaml.safe_load(yaml.serialize(node))
    if isinstance(value, str) and "${" in value:
        try:
            value = interpolate(value)
            if (
                getattr(node, "style", None) is None
            ):  # plain scalars keep YAML typing after substitution
                value = yaml.safe_load(value) if value.strip() else value
        except KeyError as exc:
            raise ConfigError(
                f"environment variable {exc.args[0]} is not set (write ${{{exc.args[0]}:-default}} "
                "to give a default)",
                file=file,
                line=lines[path],
                key=_dotted(path),
            ) from None
    return value


def _key(node: yaml.Node) -> Any:
    """A mapping key; YAML 1.1 booleans (``on``, ``yes``...) used as keys stay text."""
    if (
        isinstance(node, yaml.ScalarNode)
        and node.style is None
        and node.tag == "tag:yaml.org,2002:bool"
    ):
        return node.value
    if node.tag == "tag:yaml.org,2002:str":
        return node.value
    return yaml.safe_load(yaml.serialize(node))


def _dotted(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def parse_yaml(text: str, file: str = "<string>") -> tuple[Any, dict[Path_, int]]:
    """Parse YAML text into plain data plus a map from key path to line number."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"invalid YAML: {problem}", file=file, line=mark.line + 1 if mark else None
        ) from None
    if node is None:
        raise ConfigError("the file is empty", file=file, line=1)
    lines: dict[Path_, int] = {}
    return _build(node, (), lines, file), lines


def _line_for(loc: Path_, lines: dict[Path_, int]) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


_KEY_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def key_path(key: str) -> Path_:
    """``transforms[1].derive.temp_c`` as a key path ``("transforms", 1, "derive", "temp_c")``."""
    return tuple(int(index) if index else name for name, index in _KEY_PART.findall(key))


def line_of(pipeline: Pipeline, key: str) -> int | None:
    """The line of ``key`` (or of its nearest parent) in the file ``pipeline`` was loaded from."""
    lines: dict[Path_, int] = pipeline.__dict__.get("_lines", {})
    return _line_for(key_path(key), lines) if lines else None


def validation_error(
    exc: ValidationError, lines: dict[Path_, int], file: str, prefix: Path_ = ()
) -> ConfigError:
    """Turn a pydantic ValidationError into ``file:line: key.path: message`` lines."""
    messages = []
    first_line = None
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        loc = tuple("schema" if p == "schema_" else p for p in loc)
        # pydantic adds the union/tag member name for discriminated shapes; keep data keys only
        full = (*prefix, *loc)
        line = _line_for(full, lines)
        first_line = first_line or line
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        messages.append(f"{file}:{line or '?'}: {_dotted(full) or '(top)'}: {msg}")
    error = ConfigError("\n".join(messages))
    error.file, error.line = file, first_line
    return error


def load_model(model: type[M], data: Any, lines: dict[Path_, int], file: str) -> M:
    """Validate ``data`` into ``model``; errors carry file, line and key path."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, lines, file) from None


def load_pipeline(path: str | Path) -> Pipeline:
    """Read and validate a pipeline YAML file."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such file", file=file) from None
    except UnicodeDecodeError:
        raise ConfigError("the file is not valid UTF-8", file=file) from None
    return pipeline_from_text(text, file)


def pipeline_from_text(text: str, file: str = "<string>") -> Pipeline:
    """Validate pipeline YAML given as text."""
    data, lines = parse_yaml(text, file)
    if not isinstance(data, dict):
        raise ConfigError("a pipeline file is a mapping (name:, source:, ...)", file=file, line=1)
    pipeline = load_model(Pipeline, data, lines, file)
    pipeline.source_file = file
    pipeline.__dict__["_lines"] = lines
    return pipeline
