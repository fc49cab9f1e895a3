"""Alembic's entry point for the history schema: runs on the connection the store hands it (no alembic.ini)."""

from alembic import context

from harness.history.schema import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, version_table=VERSION_TABLE, transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
