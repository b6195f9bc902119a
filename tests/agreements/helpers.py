"""Shared helpers for the agreement tests: rows written straight to the test's transaction."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx

from accord.agreements.models import (
    AcceptanceSource,
    Agreement,
    AgreementAcceptance,
    AgreementRequirement,
    AgreementVersion,
    RequirementScope,
)
from accord.core.clock import utcnow
from accord.teams.models import MemberRole


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def field_errors(response: httpx.Response) -> dict[str, str]:
    return {e["field"]: e["reason"] for e in response.json().get("errors", [])}


async def agreement(session: Any, slug: str = "terms", title: str = "API Terms", *,
                    published: list[dict[str, Any]] | None = None, scope: RequirementScope | None = None,
                    required_since: datetime | None = None, **target: Any) -> tuple[Agreement, list[AgreementVersion]]:
    """An agreement with published versions (oldest first) and, when `scope` is given, one requirement."""
    row = Agreement(slug=slug, title=title)
    session.add(row)
    await session.flush()
    versions = []
    for number, spec in enumerate(published or [], start=1):
        spec = {"body": f"# {title} v{number}", "material": True, "grace_days": 30, **spec}
        spec.setdefault("published_at", utcnow() - timedelta(days=100 - number))
        version = AgreementVersion(agreement_id=row.id, number=number, **spec)
        session.add(version)
        versions.append(version)
    if scope is not None:
        session.add(AgreementRequirement(agreement_id=row.id, scope=scope,
                                         created_at=required_since or utcnow() - timedelta(days=200), **target))
    await session.flush()
    return row, versions


async def accepted(session: Any, partner: Any, version: AgreementVersion, at: datetime | None = None,
                   source: AcceptanceSource = AcceptanceSource.imported) -> AgreementAcceptance:
    row = AgreementAcceptance(agreement_id=version.agreement_id, version_id=version.id, partner_id=partner.id,
                              accepted_at=at or utcnow(), source=source)
    session.add(row)
    await session.flush()
    return row


async def partner_admin(factory: Any, **partner_kw: Any) -> tuple[Any, dict[str, str]]:
    partner = await factory.partner(**partner_kw)
    _, token = await factory.member(partner, MemberRole.partner_admin)
    return partner, bearer(token)
