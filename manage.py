#!/usr/bin/env python3
"""Set up and run Accord with nothing but python3.

    python3 manage.py demo     # run Accord with the demo program
    python3 manage.py test     # run the whole test suite

Each command creates `.venv/` on first use and installs the pinned
dependencies from `requirements.lock` (hash-checked), then re-installs only
when the lock file changes.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
LOCK = ROOT / "requirements.lock"
STAMP = VENV / ".accord-lock-sha256"
BIN = VENV / "bin"


def _lock_digest() -> str:
    digest = hashlib.sha256(LOCK.read_bytes())
    digest.update((ROOT / "pyproject.toml").read_bytes())
    return digest.hexdigest()


def ensure_environment() -> None:
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"Accord needs Python 3.11; this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        print("accord: creating .venv …", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if not (STAMP.exists() and STAMP.read_text() == _lock_digest()):
        _install()
    # The gateway's hot path compiled with mypyc (rebuilt when its sources change; plain Python
    # where this machine has no C compiler): see accord/gateway/native.py.
    subprocess.run([str(BIN / "python"), "-c", "from accord.gateway import native; native.build()"], cwd=ROOT)


def _install() -> None:
    print("accord: installing pinned dependencies from requirements.lock …", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--require-hashes", "-r", str(LOCK)], check=True)
    subprocess.run([*pip, "--no-deps", "--no-build-isolation", "-e", str(ROOT)], check=True)
    STAMP.write_text(_lock_digest())


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0
    ensure_environment()
    command, rest = argv[0], argv[1:]
    os.chdir(ROOT)
    if command == "test":
        args = [str(BIN / "python"), "-m", "pytest", *rest]
    elif command == "setup":
        return 0
    else:
        # Everything else is an `accord` CLI command: demo, serve, migrate, …
        args = [str(BIN / "accord"), command, *rest]
    os.execv(args[0], args)
    return 0  # unreachable


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
