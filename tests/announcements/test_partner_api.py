"""Partners see exactly the published announcements addressed to them, and nothing of other partners."""
from __future__ import annotations

import uuid

import httpx

from accord.partners.models import Audience, PartnerType
from accord.teams.models import MemberRole
from tests.announcements.helpers import archive, bearer, create, published
from tests.factories import Factory


async def test_targeting_by_tier_type_and_audience(anon: httpx.AsyncClient, admin: httpx.AsyncClient,
                                                   factory: Factory) -> None:
    gold, silver = await factory.tier("Gold"), await factory.tier("Silver")
    partners = {
        "gold-tech-partner": await factory.partner(tier_id=gold.id, type=PartnerType.technology,
                                                   audience=Audience.partner),
        "silver-tech-partner": await factory.partner(tier_id=silver.id, type=PartnerType.technology,
                                                     audience=Audience.partner),
        "gold-agency-public": await factory.partner(tier_id=gold.id, type=PartnerType.agency,
                                                    audience=Audience.public),
        "untiered-agency-internal": await factory.partner(tier_id=None, type=PartnerType.agency,
                                                          audience=Audience.internal),
    }
    tokens = {name: (await factory.member(partner, MemberRole.viewer))[1] for name, partner in partners.items()}

    # Published oldest first, so each partner's list is expected in the reverse order.
    filters = {
        "everyone": {},
        "gold": {"tier_ids": [str(gold.id)]},
        "gold or silver": {"tier_ids": [str(gold.id), str(silver.id)]},
        "agencies": {"partner_types": ["agency"]},
        "internal": {"audiences": ["internal"]},
        "public or internal": {"audiences": ["public", "internal"]},
        "gold technology partners": {"tier_ids": [str(gold.id)], "partner_types": ["technology"],
                                     "audiences": ["partner"]},
        "silver agencies": {"tier_ids": [str(silver.id)], "partner_types": ["agency"]},
    }
    ids = {title: (await published(admin, title, **fields))["id"] for title, fields in filters.items()}
    draft = await create(admin, "draft for everyone")
    archived = await archive(admin, await published(admin, "archived for everyone"))

    expected = {
        "gold-tech-partner": ["gold technology partners", "gold or silver", "gold", "everyone"],
        "silver-tech-partner": ["gold or silver", "everyone"],
        "gold-agency-public": ["public or internal", "agencies", "gold or silver", "gold", "everyone"],
        "untiered-agency-internal": ["public or internal", "internal", "agencies", "everyone"],
    }
    for name, partner in partners.items():
        headers = bearer(tokens[name])
        listed = await anon.get(f"/api/partners/{partner.id}/announcements", headers=headers)
        assert listed.status_code == 200, listed.text
        assert [a["title"] for a in listed.json()["items"]] == expected[name], name
        assert listed.json()["total"] == len(expected[name])
        # Partners see the news, not whom else it was for or which staff member wrote it.
        assert set(listed.json()["items"][0]) == {"id", "title", "body", "published_at", "updated_at"}

        for title, announcement_id in ids.items():
            one = await anon.get(f"/api/partners/{partner.id}/announcements/{announcement_id}", headers=headers)
            assert one.status_code == (200 if title in expected[name] else 404), (name, title)
        for hidden in (draft, archived):
            one = await anon.get(f"/api/partners/{partner.id}/announcements/{hidden['id']}", headers=headers)
            assert one.status_code == 404 and one.json()["type"] == "/problems/not-found"


async def test_pages_of_announcements(anon: httpx.AsyncClient, admin: httpx.AsyncClient, factory: Factory) -> None:
    partner = await factory.partner()
    _, token = await factory.member(partner)
    for n in range(5):
        await published(admin, f"News {n}")
    page = (await anon.get(f"/api/partners/{partner.id}/announcements", params={"limit": 2, "offset": 1},
                           headers=bearer(token))).json()
    assert [a["title"] for a in page["items"]] == ["News 3", "News 2"]
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 1)


async def test_another_partners_ids_answer_404(anon: httpx.AsyncClient, admin: httpx.AsyncClient,
                                               factory: Factory) -> None:
    mine, theirs = await factory.partner(), await factory.partner()
    _, token = await factory.member(mine)
    await factory.member(theirs)
    news = await published(admin, "For everyone")
    headers = bearer(token)
    for path in (f"/api/partners/{theirs.id}/announcements", f"/api/partners/{theirs.id}/announcements.atom",
                 f"/api/partners/{theirs.id}/announcements/{news['id']}",
                 f"/api/partners/{uuid.uuid4()}/announcements",
                 f"/api/partners/{mine.id}/announcements/{uuid.uuid4()}"):
        response = await anon.get(path, headers=headers)
        assert response.status_code == 404, path
        assert response.json()["type"] == "/problems/not-found"
    # The same announcement under the member's own partner is there.
    assert (await anon.get(f"/api/partners/{mine.id}/announcements/{news['id']}", headers=headers)).status_code == 200
    unauthenticated = await anon.get(f"/api/partners/{mine.id}/announcements")
    assert unauthenticated.status_code == 401
