"""The one Alembic environment every service shares; the caller passes the connection."""

from alembic import context

config = context.config
connection = config.attributes.get("connection")
target_metadata = config.attributes.get("target_metadata")

if connection is None:
    raise RuntimeError("run migrations through services.common.db.migrate or tools/migration.py")

context.configure(
    connection=connection,
    target_metadata=target_metadata,
    version_table=config.attributes.get("version_table", "alembic_version"),
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
