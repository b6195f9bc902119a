"""Request-scoped dependencies shared by every router."""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from accord.core.config import Settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's transaction: committed after the route returns, rolled back if it raises.

    Services never commit; this is the one place a request's work is made durable.
    """
    factory = request.app.state.session_factory
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
