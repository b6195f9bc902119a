"""Atom 1.0 feeds (RFC 4287) of announcements.

Entries carry the Markdown body as `content type="text"`: readers show it as written.
The feed names the program as its author rather than each entry's staff author, whose
label may be a personal email address.
"""
from __future__ import annotations

import re
import uuid
from datetime import datetime
from xml.etree import ElementTree

from accord.announcements.models import Announcement
from accord.core.clock import utcnow

ATOM_NS = "http://www.w3.org/2005/Atom"
MEDIA_TYPE = "application/atom+xml"
# Feed ids must never change; derive them from what the feed is about.
_FEED_IDS = uuid.UUID("6f1c8a52-4d0e-4b8e-9a53-0c7d5c2e9f41")
# Characters XML 1.0 cannot carry at all: C0 controls other than tab and line breaks, lone
# surrogates, U+FFFE and U+FFFF. Announcement text refuses them on input; other text that
# reaches a feed (a partner's name) has them dropped so the feed always parses.
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Serialise Atom as the default namespace (`<feed xmlns="…">`), not as `ns0:`.
ElementTree.register_namespace("", ATOM_NS)


def feed_id(key: str) -> str:
    """The permanent `urn:uuid:` id of the feed named by `key` (e.g. "audience:public")."""
    return f"urn:uuid:{uuid.uuid5(_FEED_IDS, key)}"


def _timestamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")  # RFC 3339, always UTC


def _updated(announcement: Announcement) -> datetime:
    assert announcement.published_at is not None, "only published announcements go into feeds"
    return max(announcement.updated_at, announcement.published_at)


def _add(parent: ElementTree.Element, tag: str, text: str | None = None, **attributes: str) -> ElementTree.Element:
    element = ElementTree.SubElement(parent, f"{{{ATOM_NS}}}{tag}", attributes)
    element.text = NOT_XML.sub("", text) if text is not None else None
    return element


def render(*, key: str, title: str, self_url: str, entries: list[Announcement]) -> bytes:
    """The feed document; `entries` newest first, every one of them published."""
    feed = ElementTree.Element(f"{{{ATOM_NS}}}feed")
    _add(feed, "id", feed_id(key))
    _add(feed, "title", title, type="text")
    # An empty feed has nothing to date it by; now is as true as anything.
    _add(feed, "updated", _timestamp(max(map(_updated, entries), default=utcnow())))
    _add(feed, "link", rel="self", type=MEDIA_TYPE, href=self_url)
    author = _add(feed, "author")
    _add(author, "name", "Accord partner program")
    _add(feed, "generator", "Accord")
    for announcement in entries:
        entry = _add(feed, "entry")
        _add(entry, "id", f"urn:uuid:{announcement.id}")
        _add(entry, "title", announcement.title, type="text")
        _add(entry, "updated", _timestamp(_updated(announcement)))
        _add(entry, "published", _timestamp(announcement.published_at))  # type: ignore[arg-type]
        _add(entry, "content", announcement.body, type="text")
    return ElementTree.tostring(feed, encoding="utf-8", xml_declaration=True)
