"""Helpers for the program tests: running the real CLI and looking into a committed database."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import text

from accord.core.db import create_engine
from tests.conftest import TEST_SECRET

DEMO = Path(__file__).resolve().parents[2] / "accord" / "demo" / "program.yaml"


async def accord(*args: str, database: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run `python -m accord.cli …` against `database`, the way a user does (in a worker thread)."""
    import asyncio

    environment = {**os.environ, "ACCORD_DATABASE_URL": database, "ACCORD_SECRET_KEY": TEST_SECRET,
                   "COLUMNS": "200", "NO_COLOR": "1"}
    environment.pop("ACCORD_DEMO_UPSTREAM", None)
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "accord.cli", *args],
                                   capture_output=True, text=True, env=environment, timeout=timeout)


async def query(database: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = create_engine(database)
    try:
        async with engine.connect() as connection:
            return [tuple(row) for row in await connection.execute(text(sql), params)]
    finally:
        await engine.dispose()


async def count(database: str, table: str) -> int:
    return (await query(database, f"SELECT count(*) FROM {table}"))[0][0]


def write(path: Path, content: str) -> Path:
    path.write_text(content, encoding="utf-8")
    return path
