"""The compiled hot path (accord.gateway.native): used when built from the sources as they are, never when stale."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from accord.gateway import native


def test_ci_runs_the_gateway_compiled() -> None:
    """`manage.py` builds it on any machine with a C compiler, as CI's: the tests then run the compiled modules."""
    if os.environ.get("CI") != "true":
        pytest.skip("outside CI the plain modules may be in use (no compiler, or sources edited since the build)")
    assert native.compiled()


def test_a_build_from_other_sources_is_never_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stamp = tmp_path / "SOURCES.sha256"
    monkeypatch.setattr(native, "STAMP", stamp)
    path: list[str] = []
    stamp.write_text("0" * 64)  # built from sources edited since
    assert native.activate(path) is False and path == []
    stamp.write_text(native.sources_digest())
    monkeypatch.setenv("ACCORD_GATEWAY_PURE_PYTHON", "1")
    assert native.activate(path) is False and path == []
    monkeypatch.delenv("ACCORD_GATEWAY_PURE_PYTHON")
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    assert native.activate(path) is True and path == [str(native.BUILD / "accord" / "gateway")]
