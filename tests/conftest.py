"""Test harness: real databases, the real app over real sockets, one rolled-back transaction per test.

Every test that uses `backend` runs twice: on SQLite and on PostgreSQL. The
control plane runs under uvicorn on a random loopback port in the test's
event loop; each test's requests share one connection whose outer transaction
is rolled back afterwards, so tests never see each other's data.
"""
from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from accord.app import create_app
from accord.core.config import Settings
from accord.core.db import create_engine
from tests import databases
from tests.factories import Factory

TEST_SECRET = "test-secret-key-0123456789abcdef"


@pytest.fixture(scope="session")
def tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("accord")


@pytest.fixture(scope="session")
def postgres() -> Iterator[databases.PostgresDatabases]:
    databases.require_postgres()
    pg = databases.PostgresDatabases()
    yield pg
    pg.drop_all()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def database_url(backend: str, request: pytest.FixtureRequest, tmp_root: Path) -> str:
    if backend == "postgres":
        return request.getfixturevalue("postgres").fresh()
    return databases.fresh_sqlite(tmp_root)


@pytest.fixture
def fresh_database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database of the test's own, for work that commits (CLI runs, several processes)."""
    if backend == "postgres":
        return request.getfixturevalue("postgres").fresh()
    return databases.fresh_sqlite(tmp_path)


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, secret_key=TEST_SECRET)


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def server(settings: Settings, engine: AsyncEngine) -> AsyncIterator[tuple[object, str]]:
    app = create_app(settings, engine)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    while not srv.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield app, f"http://127.0.0.1:{port}"
    srv.should_exit = True
    await task


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as conn:
        transaction = await conn.begin()
        yield conn
        await transaction.rollback()


@pytest.fixture
async def session(connection: AsyncConnection, server: tuple[object, str]) -> AsyncIterator[AsyncSession]:
    """The test's session; the running app is pointed at the same connection for this test."""
    factory = async_sessionmaker(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    app, _ = server
    previous = app.state.session_factory
    app.state.session_factory = factory
    async with factory() as s:
        yield s
    app.state.session_factory = previous


@pytest.fixture
def base_url(server: tuple[object, str]) -> str:
    return server[1]


@pytest.fixture
async def factory(session: AsyncSession, settings: Settings) -> Factory:
    return Factory(session, settings.secret_key)


@pytest.fixture
async def anon(base_url: str, session: AsyncSession) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        yield client


@pytest.fixture
async def admin(base_url: str, factory: Factory) -> AsyncIterator[httpx.AsyncClient]:
    """A client holding an owner admin token."""
    token = await factory.admin_token()
    async with httpx.AsyncClient(base_url=base_url, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


def pytest_report_header(config: pytest.Config) -> str:
    return f"accord: PostgreSQL at {databases.POSTGRES_ADMIN_URL}; CI={databases.IN_CI}; chromium={shutil.which('chromium')}"
