"""`accord audit` against a committed database: the table, CSV and JSON, and the remediation options."""
from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

from accord.agreements.models import RequirementScope
from accord.apps.models import Environment
from accord.core.clock import utcnow
from accord.core.db import create_engine, session_factory, session_scope
from accord.partners.models import PartnerType
from tests.conftest import TEST_SECRET
from tests.factories import Factory
from tests.integrations.helpers import agreement
from tests.program.helpers import accord, query


async def _seed(database: str) -> None:
    engine = create_engine(database)
    try:
        async with session_scope(session_factory(engine)) as session:
            factory = Factory(session, TEST_SECRET)
            now = utcnow()
            stale = await factory.partner(slug="stale", name="Stale")
            app = await factory.application(stale, Environment.production)
            await factory.credential(app, name="old key", created_at=now - timedelta(days=200),
                                     last_used_at=now - timedelta(days=120))
            await factory.credential(app, name="new key", created_at=now - timedelta(days=2))
            unsigned = await factory.partner(slug="unsigned", name="Unsigned", type=PartnerType.reseller)
            app = await factory.application(unsigned, Environment.sandbox)
            await factory.credential(app, created_at=now - timedelta(days=2))
            await agreement(session, "reseller-terms", published_at=now - timedelta(days=40),
                            scope=RequirementScope.partner_type, partner_type="reseller")
    finally:
        await engine.dispose()


async def test_audit_prints_exports_and_remediates(fresh_database_url: str, tmp_path: Path) -> None:
    db = fresh_database_url
    assert (await accord("migrate", database=db)).returncode == 0
    await _seed(db)

    table = await accord("audit", database=db)
    assert table.returncode == 0, table.stderr
    assert "Integration audit: 2 partner(s)" in table.stdout
    assert "stale-credential" in table.stdout and "missing-agreement" in table.stdout
    assert "no-active-member 2" in table.stdout

    only = await accord("audit", "--flag", "stale-credential", "--format", "csv", database=db)
    assert only.returncode == 0, only.stderr
    rows = list(csv.DictReader(io.StringIO(only.stdout)))
    assert [(r["slug"], r["flags"]) for r in rows] == [("stale", "stale-credential; no-active-member")]

    out = tmp_path / "audit.json"
    written = await accord("audit", "--format", "json", "-o", str(out), "--partner", "unsigned", database=db)
    assert written.returncode == 0, written.stderr
    [unsigned] = json.loads(out.read_text())
    assert [a["slug"] for a in unsigned["agreements_missing"]] == ["reseller-terms"]

    assert (await accord("audit", "--partner", "nobody", database=db)).returncode == 2
    assert (await accord("audit", "--format", "xml", database=db)).returncode == 2
    assert (await accord("audit", "--flag", "odd", database=db)).returncode == 2

    dry = await accord("audit", "--revoke-stale", "--dry-run", database=db)
    assert dry.returncode == 0, dry.stderr
    assert "would revoke 1 stale credential(s)" in dry.stdout and "old key" in dry.stdout
    assert await query(db, "SELECT count(*) FROM credentials WHERE revoked_at IS NOT NULL") == [(0,)]

    revoked = await accord("audit", "--revoke-stale", database=db)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked 1 stale credential(s)" in revoked.stdout
    assert await query(db, "SELECT name FROM credentials WHERE revoked_at IS NOT NULL") == [("old key",)]
    assert await query(db, "SELECT type, count(*) FROM events WHERE type LIKE 'credential.%' GROUP BY type "
                           "ORDER BY type") == [("credential.revoked", 1), ("credential.stale_revoked", 1)]
    assert await query(db, "SELECT actor_kind FROM audit_entries WHERE action = 'credential.stale_revoked'") == \
        [("cli",)]

    asked = await accord("audit", "--request-reacceptance", database=db)
    assert asked.returncode == 0, asked.stderr
    assert "asked 1 partner agreement(s)" in asked.stdout
    assert await query(db, "SELECT count(*) FROM events WHERE type = 'agreement.reacceptance_requested'") == [(1,)]
