"""A periodic job for the worker (accord.worker): one function, run in its own transaction every so often."""
from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from accord.core.config import Settings
from accord.core.db import create_engine, session_factory, session_scope


class PeriodicJob:
    """A worker dispatcher whose pass is `run(session) -> how much it did`, committed when it returns.

    Subclasses set `job` — a staticmethod taking the session, or a method when the job needs
    `self.settings` — and, if a minute is not right, `poll_interval`. (Not `run`: the worker takes a
    dispatcher's `run(stop)` for a loop of its own.)
    """

    poll_interval = 60.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._engine: AsyncEngine | None = None

    async def job(self, session: AsyncSession) -> int:
        raise NotImplementedError

    async def start(self) -> None:
        self._engine = create_engine(self.settings.database_url)

    async def run_once(self) -> int:
        assert self._engine is not None, "start() first"
        async with session_scope(session_factory(self._engine)) as session:
            return await self.job(session)

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
