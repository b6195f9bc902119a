"""Building the audit's facts straight into the test's transaction: usage rows, agreements, acceptances."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from accord.agreements.models import (
    AcceptanceSource,
    Agreement,
    AgreementAcceptance,
    AgreementRequirement,
    AgreementVersion,
    RequirementScope,
)
from accord.apps.models import Application
from accord.usage.models import UsageCount


async def usage(session: AsyncSession, app: Application, minute: datetime, count: int, *, denial: str = "",
                metric_id: uuid.UUID | None = None) -> None:
    session.add(UsageCount(bucket_key=uuid.uuid4().hex, minute=minute.replace(second=0, microsecond=0),
                           partner_id=app.partner_id, application_id=app.id, environment=app.environment.value,
                           metric_id=metric_id, status_class="4xx" if denial else "2xx", denial=denial,
                           count=count, units=count))
    await session.flush()


async def agreement(session: AsyncSession, slug: str, *, published_at: datetime, grace_days: int = 14,
                    **requirement: object) -> tuple[Agreement, AgreementVersion]:
    """A published agreement (version 1, material) with one requirement created when it was published."""
    row = Agreement(slug=slug, title=slug.replace("-", " ").title())
    session.add(row)
    await session.flush()
    version = AgreementVersion(agreement_id=row.id, number=1, body="…", material=True, grace_days=grace_days,
                               published_at=published_at, effective_at=published_at)
    session.add(version)
    session.add(AgreementRequirement(agreement_id=row.id, created_at=published_at,
                                     scope=requirement.pop("scope", RequirementScope.all), **requirement))
    await session.flush()
    return row, version


async def accept(session: AsyncSession, version: AgreementVersion, partner_id: uuid.UUID, at: datetime) -> None:
    session.add(AgreementAcceptance(agreement_id=version.agreement_id, version_id=version.id, partner_id=partner_id,
                                    accepted_at=at, recorded_at=at, source=AcceptanceSource.staff,
                                    accepted_by="test"))
    await session.flush()


def days_ago(now: datetime, days: float) -> datetime:
    return now - timedelta(days=days)
