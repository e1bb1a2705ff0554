"""What an evaluation returns: its figures (for ``--json``) and tables (for people)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FigureTable:
    """One table of figures: a title, column names and rows of display strings."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def markdown(self) -> list[str]:
        """The table as Markdown lines (title as a paragraph above it)."""
        lines = [self.title, ""] if self.title else []
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "---|" * len(self.columns))
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return lines


@dataclass
class Evaluation:
    """The result of one evaluation harness."""

    dataset: str
    description: str
    figures: dict[str, Any]
    tables: list[FigureTable]
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (NaN becomes null)."""
        return {
            "dataset": self.dataset,
            "description": self.description,
            "seconds": round(self.seconds, 3),
            "figures": _finite(self.figures),
        }

    def markdown(self) -> list[str]:
        """Every table as Markdown, separated by blank lines."""
        lines: list[str] = []
        for table in self.tables:
            lines += [*table.markdown(), ""]
        return lines


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table: ``digits`` decimals for floats, thousands separators for ints."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def pct(value: float, digits: int = 2) -> str:
    """A rate as a percentage."""
    return "n/a" if math.isnan(value) else f"{100.0 * value:.{digits}f}%"


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
