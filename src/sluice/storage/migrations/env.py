"""Alembic environment of the metadata DB; ``sluice.storage.migrate`` hands it a connection.

To change the schema, change the table in code and add ``versions/NNNN_<slug>.py`` whose
``down_revision`` is the current head; ``tests/integration/test_postgres_metadata.py``
checks that the migrated schema matches the tables in code on SQLite and PostgreSQL.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run metadata migrations with `sluice db upgrade` (sluice.storage.migrate)")
context.configure(
    connection=connection,
    target_metadata=context.config.attributes.get("target_metadata"),
    render_as_batch=True,  # SQLite cannot ALTER most things: batch mode copies the table
)
with context.begin_transaction():
    context.run_migrations()
