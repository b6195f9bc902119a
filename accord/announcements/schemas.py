"""API shapes for announcements: staff write them, partners read them, users opt in to emails."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, TypeVar

from pydantic import AfterValidator, Field

from accord.announcements.atom import NOT_XML
from accord.announcements.models import AnnouncementStatus
from accord.core.schemas import LongText, Name, ReadModel, WriteModel
from accord.partners.models import Audience, PartnerType


def _xml_safe(value: str) -> str:
    # Announcements are served in Atom feeds, and XML cannot carry every character.
    if NOT_XML.search(value):
        raise ValueError("must not contain control characters (other than tab and line breaks)")
    return value


T = TypeVar("T")


def _unique(values: list[T]) -> list[T]:
    return list(dict.fromkeys(values))


Title = Annotated[Name, AfterValidator(_xml_safe)]
Body = Annotated[LongText, AfterValidator(_xml_safe), Field(description="Markdown, stored and shown as given")]
TierIds = Annotated[list[uuid.UUID], Field(max_length=100, description="Only partners in these tiers; empty = all"),
                    AfterValidator(_unique)]
PartnerTypes = Annotated[list[PartnerType], Field(max_length=50, description="Only partners of these types; "
                                                                              "empty = all"), AfterValidator(_unique)]
Audiences = Annotated[list[Audience], Field(max_length=10, description="Only partners with these audiences; "
                                                                       "empty = all"), AfterValidator(_unique)]


class AnnouncementCreate(WriteModel):
    title: Title
    body: Body = ""
    tier_ids: TierIds = []
    partner_types: PartnerTypes = []
    audiences: Audiences = []


class AnnouncementUpdate(WriteModel):
    """Drafts can change everything; published announcements only their title and body."""

    title: Title | None = None
    body: Body | None = None
    tier_ids: TierIds | None = None
    partner_types: PartnerTypes | None = None
    audiences: Audiences | None = None


class AnnouncementRead(ReadModel):
    """The staff view, with the audience filter and the author."""

    id: uuid.UUID
    title: str
    body: str
    tier_ids: list[uuid.UUID]
    partner_types: list[PartnerType]
    audiences: list[Audience]
    status: AnnouncementStatus
    published_at: datetime | None
    archived_at: datetime | None
    author: str
    created_at: datetime
    updated_at: datetime


class PartnerAnnouncementRead(ReadModel):
    """What a partner sees: the news, not whom else it went to."""

    id: uuid.UUID
    title: str
    body: str
    published_at: datetime
    updated_at: datetime


class AnnouncementEmailsUpdate(WriteModel):
    opted_in: bool


class AnnouncementEmailsRead(ReadModel):
    opted_in: bool
