"""Atom 1.0 feeds: the public one per audience never carries targeted announcements."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree

import httpx

from accord.core.clock import clock
from accord.partners.models import Audience, PartnerType
from tests.announcements.helpers import archive, bearer, create, published
from tests.factories import Factory

NS = {"atom": "http://www.w3.org/2005/Atom"}
MARKDOWN = "# Heads up\n\n*Rate limits* change on <Monday> & the docs say `a < b`.\n\tIndented."


def _moment(text: str) -> datetime:
    """An RFC 3339 timestamp as Atom requires it: with its offset (here always Z)."""
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


def _parse(response: httpx.Response) -> ElementTree.Element:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/atom+xml")
    feed = ElementTree.fromstring(response.content)
    assert feed.tag == "{http://www.w3.org/2005/Atom}feed"
    assert feed.findtext("atom:id", namespaces=NS).startswith("urn:uuid:")
    assert feed.findtext("atom:title", namespaces=NS)
    _moment(feed.findtext("atom:updated", namespaces=NS))
    assert feed.find("atom:author/atom:name", namespaces=NS).text  # required unless every entry has one
    return feed


def _entries(feed: ElementTree.Element) -> dict[str, ElementTree.Element]:
    """Entries by title, checking each has what RFC 4287 requires."""
    out = {}
    for entry in feed.findall("atom:entry", NS):
        assert entry.findtext("atom:id", namespaces=NS).startswith("urn:uuid:")
        assert _moment(entry.findtext("atom:published", namespaces=NS)) <= _moment(
            entry.findtext("atom:updated", namespaces=NS))
        assert entry.find("atom:content", NS).get("type") == "text"
        out[entry.findtext("atom:title", namespaces=NS)] = entry
    return out


async def test_public_feeds_carry_only_untargeted_announcements(anon: httpx.AsyncClient, admin: httpx.AsyncClient,
                                                                factory: Factory) -> None:
    empty = _parse(await anon.get("/api/announcements/feed/partner.atom"))
    assert _entries(empty) == {}

    gold = await factory.tier("Gold")
    everyone = await published(admin, "Everyone <& all>", body=MARKDOWN)
    await published(admin, "Partners", audiences=["partner"])
    await published(admin, "Partners and public", audiences=["partner", "public"])
    await published(admin, "Public only", audiences=["public"])
    await published(admin, "Gold only", tier_ids=[str(gold.id)])
    await published(admin, "Agencies only", partner_types=["agency"])
    await published(admin, "Gold partners", tier_ids=[str(gold.id)], audiences=["partner"])
    await create(admin, "Draft")
    await archive(admin, await published(admin, "Archived"))

    partner_feed = _parse(await anon.get("/api/announcements/feed/partner.atom"))
    entries = _entries(partner_feed)
    assert list(entries) == ["Partners and public", "Partners", "Everyone <& all>"]  # newest first
    first = entries["Everyone <& all>"]
    assert first.findtext("atom:id", namespaces=NS) == f"urn:uuid:{everyone['id']}"
    assert first.findtext("atom:content", namespaces=NS) == MARKDOWN  # escaped in the XML, intact once parsed
    assert _moment(first.findtext("atom:published", namespaces=NS)) == datetime.fromisoformat(
        everyone["published_at"])

    public_feed = _parse(await anon.get("/api/announcements/feed/public.atom"))
    assert list(_entries(public_feed)) == ["Public only", "Partners and public", "Everyone <& all>"]
    internal_feed = _parse(await anon.get("/api/announcements/feed/internal.atom"))
    assert list(_entries(internal_feed)) == ["Everyone <& all>"]

    # Each feed keeps its own permanent id.
    again = _parse(await anon.get("/api/announcements/feed/partner.atom"))
    ids = {f.findtext("atom:id", namespaces=NS) for f in (partner_feed, public_feed, internal_feed)}
    assert len(ids) == 3 and again.findtext("atom:id", namespaces=NS) in ids

    unknown = await anon.get("/api/announcements/feed/everyone.atom")
    assert unknown.status_code == 422 and unknown.headers["content-type"] == "application/problem+json"


async def test_an_edit_moves_the_entry_and_feed_updated(anon: httpx.AsyncClient, admin: httpx.AsyncClient) -> None:
    published_at = datetime(2031, 5, 4, 12, 0, tzinfo=UTC)
    try:
        clock.freeze(published_at)
        news = await published(admin, "Launch")
        clock.freeze(published_at + timedelta(days=1))
        edited = await admin.patch(f"/admin/api/announcements/{news['id']}", json={"title": "Launch (updated)"})
        assert edited.status_code == 200, edited.text
    finally:
        clock.resume()
    feed = _parse(await anon.get("/api/announcements/feed/public.atom"))
    entry = _entries(feed)["Launch (updated)"]
    assert _moment(entry.findtext("atom:published", namespaces=NS)) == published_at
    assert _moment(entry.findtext("atom:updated", namespaces=NS)) == published_at + timedelta(days=1)
    assert _moment(feed.findtext("atom:updated", namespaces=NS)) == published_at + timedelta(days=1)


async def test_a_partners_own_feed_includes_its_targeted_announcements(anon: httpx.AsyncClient,
                                                                       admin: httpx.AsyncClient,
                                                                       factory: Factory) -> None:
    gold, silver = await factory.tier("Gold"), await factory.tier("Silver")
    partner = await factory.partner(name="Acme & Sons", tier_id=gold.id, type=PartnerType.reseller,
                                    audience=Audience.partner)
    _, token = await factory.member(partner)
    await published(admin, "For everyone")
    await published(admin, "For gold resellers", tier_ids=[str(gold.id)], partner_types=["reseller"])
    await published(admin, "For silver", tier_ids=[str(silver.id)])
    await published(admin, "For the public audience", audiences=["public"])
    await archive(admin, await published(admin, "Withdrawn gold news", tier_ids=[str(gold.id)]))

    feed = _parse(await anon.get(f"/api/partners/{partner.id}/announcements.atom", headers=bearer(token)))
    assert feed.findtext("atom:title", namespaces=NS) == "Announcements for Acme & Sons"
    assert list(_entries(feed)) == ["For gold resellers", "For everyone"]
    assert feed.find("atom:link[@rel='self']", NS).get("href").endswith(f"/api/partners/{partner.id}/announcements.atom")

    # The public feed of the partner's audience leaves the targeted one out.
    public = _parse(await anon.get("/api/announcements/feed/partner.atom"))
    assert list(_entries(public)) == ["For everyone"]
    assert (await anon.get(f"/api/partners/{partner.id}/announcements.atom")).status_code == 401
