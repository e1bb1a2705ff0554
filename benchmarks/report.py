"""Assemble BENCHMARKS.md from the sections each benchmark writes to benchmarks/results/."""

from __future__ import annotations

from pathlib import Path

ORDER = [
    "throughput",
    "epochs",
    "state_checkpoint",
    "anomaly",
    "inference",
    "kafka",
    "sql_source",
    "service",
    "service_isolation",
    "actions",
]
HEADER = """# Benchmarks

Every figure here is produced by a script in `benchmarks/` and is printed beside a baseline
measured in the same invocation, because absolute times vary between machines and runs:
the ratios are the figures that count. Re-run with `python benchmarks/<name>.py` and then
`python benchmarks/report.py`.
"""


def main() -> None:
    """Write BENCHMARKS.md at the repository root."""
    results = Path(__file__).parent / "results"
    names = sorted(p.stem for p in results.glob("*.md"))
    ordered = [n for n in ORDER if n in names] + [n for n in names if n not in ORDER]
    parts = [HEADER] + [(results / f"{n}.md").read_text().strip() + "\n" for n in ordered]
    out = Path(__file__).parent.parent / "BENCHMARKS.md"
    out.write_text("\n".join(parts))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
