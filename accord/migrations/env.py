"""Alembic environment: runs migrations over our async engine."""
from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from accord.core.db import create_engine
from accord.core.models import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
        if not context.is_offline_mode() and config.attributes.get("autogenerate") is not True:
            _ensure_rows(connection)


def _ensure_rows(connection: Connection) -> None:
    from sqlalchemy import inspect

    from accord.core.version import ensure_version_row

    if inspect(connection).has_table("program_version"):
        ensure_version_row(connection)


async def _run_async() -> None:
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


existing = config.attributes.get("connection")
if existing is not None:
    _run(existing)
else:
    asyncio.run(_run_async())
