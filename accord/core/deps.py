"""Request-scoped dependencies shared by every router."""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from accord.core.config import Settings
from accord.core.db import session_scope


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's transaction: committed after the route returns, rolled back if it raises.

    Services never commit; this is the one place a request's work is made durable.
    """
    async with session_scope(request.app.state.session_factory) as session:
        yield session


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
