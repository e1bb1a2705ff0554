"""The ``sluice`` command line (thin: parse, call the layers, print).

The command modules do not use ``from __future__ import annotations``: Typer reads every
command's signature at each start, and evaluating them from strings costs about 20 ms.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from sluice.core.allocator import one_blas_thread, return_arrow_pages_promptly

return_arrow_pages_promptly()  # before the commands' modules load pyarrow
one_blas_thread()  # and numpy

from sluice.cli import db, jobs, models, ops, pipelines, service  # noqa: E402

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Sluice: ingest, validate, score, act on and land event streams.",
)
app.registered_commands.extend(pipelines.app.registered_commands)
app.registered_commands.extend(service.app.registered_commands)
app.add_typer(pipelines.dlq_app, name="dlq")
app.registered_commands.extend(ops.app.registered_commands)
app.add_typer(models.app, name="models")
app.add_typer(ops.actions_app, name="actions")
app.add_typer(ops.pipelines_app, name="pipelines")
app.add_typer(ops.api_app, name="api")
app.add_typer(jobs.app, name="jobs")
app.add_typer(jobs.airflow_app, name="airflow")
app.add_typer(jobs.scheduler_app, name="scheduler")
app.add_typer(db.app, name="db")


def main() -> None:
    """Entry point of the ``sluice`` console script."""
    level = os.environ.get("SLUICE_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(
        level=level if level in logging.getLevelNamesMapping() else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
