"""The partner service functions other domains call directly (sign-up, `accord apply`, imports)."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from accord.audit.models import AuditEntry
from accord.auth.actor import CLI_ACTOR
from accord.core.errors import ProblemError
from accord.partners import service
from accord.partners.schemas import PartnerCreate
from tests.partners.helpers import define_partner_fields


async def test_create_partner_for_callers_outside_http(session, factory) -> None:
    assert await service.lowest_tier(session) is None
    await factory.tier("Gold", rank=30)
    registered = await factory.tier("Registered", rank=10)
    assert (await service.lowest_tier(session)).id == registered.id

    partner = await service.create_partner(session, CLI_ACTOR, PartnerCreate(name="Acme", slug="acme",
                                                                             status="active"))
    assert partner.tier_id == registered.id and partner.status == "active"
    assert (await service.get_partner_by_slug(session, "acme")).id == partner.id
    assert await service.get_partner_by_slug(session, "nobody") is None

    entry = await session.scalar(select(AuditEntry).where(AuditEntry.target_id == str(partner.id)))
    assert (entry.action, entry.actor_kind, entry.partner_id) == ("partner.created", "cli", partner.id)

    with pytest.raises(ProblemError) as duplicate:
        await service.create_partner(session, CLI_ACTOR, PartnerCreate(name="Acme again", slug="acme"))
    assert (duplicate.value.slug, duplicate.value.errors[0]["field"]) == ("conflict", "slug")


async def test_a_self_signup_cannot_set_hidden_custom_fields(session) -> None:
    await define_partner_fields(session)
    data = PartnerCreate(name="Dana", slug="dana", custom_fields={"region": "emea", "crm_account": "X"})
    with pytest.raises(ProblemError) as refused:
        await service.create_partner(session, CLI_ACTOR, data, include_hidden=False)
    assert refused.value.errors == [{"field": "custom_fields.crm_account", "reason": "no such custom field"}]

    staff_made = await service.create_partner(session, CLI_ACTOR, data)
    assert staff_made.custom_fields == {"region": "emea", "crm_account": "X"}


async def test_available_slug_makes_a_free_slug_from_a_name(session, factory) -> None:
    assert await service.available_slug(session, "Acme Inc.") == "acme-inc"
    await factory.partner(slug="acme-inc")
    assert await service.available_slug(session, "Acme Inc.") == "acme-inc-2"
    await factory.partner(slug="acme-inc-2")
    assert await service.available_slug(session, "  ACME   inc ") == "acme-inc-3"
    assert await service.available_slug(session, "Café Über") == "cafe-uber"
    assert await service.available_slug(session, "!!!") == "partner"
    long_slug = await service.available_slug(session, "x" * 300)
    assert len(long_slug) <= 100 and PartnerCreate(name="x", slug=long_slug).slug == long_slug
