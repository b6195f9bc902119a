"""The migrations build exactly the schema the models describe, on both databases."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncConnection

from accord.core.migrate import head_revision
from accord.core.models import metadata


async def test_migrated_schema_matches_models(connection: AsyncConnection) -> None:
    def diff(sync_connection):
        context = MigrationContext.configure(sync_connection, opts={"compare_type": False})
        return compare_metadata(context, metadata), context.get_current_revision()

    changes, revision = await connection.run_sync(diff)
    assert revision == head_revision()
    assert changes == [], f"models and migrations differ; run scripts/regen-initial-migration: {changes}"
