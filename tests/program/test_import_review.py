"""`accord partners import`: each bad cell is named once (not also as missing), and a signature dated before
the version existed is refused, in the file check and when staff record one."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.agreements.models import RequirementScope
from accord.core.clock import utcnow
from accord.core.config import Settings
from accord.partners.models import Partner
from accord.program.errors import ProgramError
from tests.agreements.helpers import agreement, field_errors
from tests.program.helpers import write
from tests.program.test_import_history import run, setup_program


async def test_a_bad_cell_is_reported_once_and_early_signatures_are_refused(tmp_path: Path, session: AsyncSession,
                                                                            settings: Settings) -> None:
    await setup_program(session)  # terms v1 published 2023-12-01
    future = (utcnow() + timedelta(days=2)).date().isoformat()
    path = write(tmp_path / "bad.csv", "name,product,plan,agreement,agreement_version,accepted_at\n"
                                       f"A,,,terms,1,{future}\n"
                                       "B,maps,Not A Slug!,,,\n"
                                       "C,,,terms,1,2023-11-30\n"
                                       "D,,,terms,1,2023-12-02\n")
    with pytest.raises(ProgramError) as error:
        await run(session, settings, path)
    problems = error.value.problems
    assert [p for p in problems if p[0] == "row 2, accepted_at"] == [("row 2, accepted_at", "is in the future")]
    assert [p for p in problems if p[0] == "row 3, plan" and "required" in p[1]] == []
    assert "row 3, plan" in dict(problems)
    assert dict(problems)["row 4, accepted_at"] == "is before version 1 was published (2023-12-01 00:00 UTC)"
    assert not any(where.startswith("row 5") for where, _ in problems)
    assert await session.scalar(select(Partner.id)) is None


async def test_staff_cannot_record_a_signature_older_than_the_version(admin: httpx.AsyncClient, factory,
                                                                     session) -> None:
    partner = await factory.partner()
    published = utcnow() - timedelta(days=10)
    terms, (v1,) = await agreement(session, slug="early-terms", published=[{"published_at": published}],
                                   scope=RequirementScope.all)
    base = f"/admin/api/agreements/{terms.id}/acceptances"
    early = await admin.post(base, json={"partner_id": str(partner.id),
                                         "accepted_at": (published - timedelta(days=1)).isoformat()})
    assert early.status_code == 422, early.text
    assert early.headers["content-type"] == "application/problem+json"
    assert "accepted_at" in field_errors(early)
    on_time = await admin.post(base, json={"partner_id": str(partner.id),
                                           "accepted_at": (published + timedelta(hours=1)).isoformat()})
    assert on_time.status_code == 201, on_time.text
