"""Alembic environment: runs on the connection handed in by ``services.core.db.upgrade_database``,
or on ``TSMINDEX_DATABASE_URL`` when invoked through the alembic command line."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from services.core.config import get_settings
from services.core.db import create_db_engine
from services.core.models import Base
from services.core.vectors import managed_outside_models

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    # render_as_batch: SQLite can only alter tables by copying them.
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=managed_outside_models,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = create_db_engine(get_settings().resolved_database_url)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
