"""Real test databases: a migrated SQLite file and a migrated PostgreSQL database.

PostgreSQL is at ACCORD_TEST_POSTGRES_URL (default: postgresql://postgres@127.0.0.1:5432/postgres).
Outside CI its tests skip with a message when it is unreachable; under CI=true they fail instead.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import psycopg
import pytest

from accord.core import migrate

POSTGRES_ADMIN_URL = os.environ.get("ACCORD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _pg_url_for(name: str) -> str:
    base, _, _ = POSTGRES_ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


def require_postgres() -> None:
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3):
            pass
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL unreachable at {POSTGRES_ADMIN_URL}: {str(exc).strip().splitlines()[0]}"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: PostgreSQL tests must run)", pytrace=False)
        pytest.skip(f"{message}; start PostgreSQL to run these tests")


class PostgresDatabases:
    """Creates databases for one test run: a migrated template, then cheap copies of it."""

    def __init__(self) -> None:
        self.prefix = f"accord_t{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.template = f"{self.prefix}_tmpl"
        self.created: list[str] = []
        self._ready = False

    def _admin(self, sql: str) -> None:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql)

    def template_url(self) -> str:
        if not self._ready:
            self._admin(f'CREATE DATABASE "{self.template}"')
            self.created.append(self.template)
            migrate.upgrade(_pg_url_for(self.template))
            self._ready = True
        return _pg_url_for(self.template)

    def fresh(self) -> str:
        """A new, migrated, empty database."""
        self.template_url()
        name = f"{self.prefix}_{uuid.uuid4().hex[:8]}"
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self.created.append(name)
        return _pg_url_for(name)

    def drop_all(self) -> None:
        for name in reversed(self.created):
            try:
                self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg.Error:
                pass


def fresh_sqlite(directory: Path) -> str:
    path = directory / f"accord-{uuid.uuid4().hex[:8]}.db"
    url = f"sqlite+aiosqlite:///{path}"
    migrate.upgrade(url)
    return url
