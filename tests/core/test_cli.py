"""The `accord` command line as a user runs it: a real process on a real database."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_SECRET


def run_accord(*args: str, database: str, env: dict[str, str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "ACCORD_DATABASE_URL": database, "ACCORD_SECRET_KEY": TEST_SECRET,
                   "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "accord.cli", *args], capture_output=True, text=True,
                          env=environment, timeout=timeout)


def test_serve_refuses_an_unmigrated_database_and_names_the_command(tmp_path: Path) -> None:
    result = run_accord("serve", "--port", "0", database=f"sqlite:///{tmp_path}/empty.db")
    assert result.returncode == 1
    assert "accord migrate" in result.stderr


def test_migrate_then_token_create(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path}/accord.db"
    assert "latest schema" in run_accord("migrate", database=database).stdout
    assert run_accord("migrate", database=database).returncode == 0  # idempotent
    created = run_accord("token", "create", "--name", "ci", "--role", "viewer", database=database)
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip().startswith("acc_admin_")
    bad_role = run_accord("token", "create", "--role", "emperor", database=database)
    assert bad_role.returncode == 2 and "--role must be one of" in bad_role.stderr


def test_production_mode_refuses_the_demo_secret(tmp_path: Path) -> None:
    result = run_accord("migrate", database=f"sqlite:///{tmp_path}/x.db",
                        env={"ACCORD_MODE": "production", "ACCORD_SECRET_KEY": "accord-demo-secret-key-change-me"})
    assert result.returncode == 2
    assert "demo secret" in result.stderr


@pytest.mark.parametrize("url", ["postgresql://postgres@127.0.0.1:1/nowhere"])
def test_unreachable_database_is_a_clear_error(url: str) -> None:
    result = run_accord("serve", "--port", "0", database=url)
    assert result.returncode == 1
    assert "cannot open the database" in result.stderr
