"""``sluice db upgrade|current``: the metadata database's schema revision."""

import typer

from sluice.cli.common import console, fail, settings
from sluice.core.errors import SluiceError

app = typer.Typer(no_args_is_help=True, help="Metadata database: schema migrations.")


@app.command()
def upgrade() -> None:
    """Migrate the metadata database (SLUICE_METADATA_URL) to this version's schema."""
    from sluice.storage import migrate
    from sluice.storage.db import make_engine

    try:
        engine = make_engine(str(settings().metadata_url))
        before = migrate.current(engine)
        migrate.ensure_schema(engine)
        after = migrate.current(engine)
    except SluiceError as exc:
        fail(exc)
    where = engine.url.render_as_string(hide_password=True)
    change = "already at" if before == after else f"upgraded from {before or 'empty'} to"
    console.print(f"{where}: {change} revision {after}", highlight=False, soft_wrap=True)


@app.command()
def current() -> None:
    """Show the schema revision of the metadata database and the newest one Sluice knows."""
    from sluice.storage import migrate
    from sluice.storage.db import make_engine

    try:
        engine = make_engine(str(settings().metadata_url))
        revision = migrate.current(engine)
    except SluiceError as exc:
        fail(exc)
    where = engine.url.render_as_string(hide_password=True)
    state = "up to date" if revision == migrate.head() else f"newest is {migrate.head()}"
    console.print(
        f"{where}: revision {revision or 'none'} ({state})", highlight=False, soft_wrap=True
    )
