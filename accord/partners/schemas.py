"""API shapes for partners and program tiers, for staff (`/admin/api`) and for partners (`/api`)."""
from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints, field_validator
from pydantic.networks import validate_email

from accord.core.schemas import CustomFieldValues, LongText, Name, ReadModel, Slug, WriteModel
from accord.core.schemas import _http_url as http_url_check
from accord.partners.models import Audience, PartnerStatus, PartnerType

# ISO 3166-1 alpha-2: the 249 officially assigned codes (user-assigned ones like XK are refused).
ISO_COUNTRIES = frozenset("""
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD
CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF
GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN
KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA
NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI
SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI
VN VU WF WS YE YT ZA ZM ZW
""".split())


# Contact details are optional: "" means "not given" (and clears a stored value), so each
# validator lets the empty string through. Doing it in one validator, not `X | Literal[""]`,
# keeps validation errors naming the plain field (`contact_email`, not a union branch).

def _email_or_blank(value: str) -> str:
    # Lower case like user emails, so searching by contact email is predictable.
    return validate_email(value)[1].lower() if value else ""


def _url_or_blank(value: str) -> str:
    if not value:
        return ""
    return http_url_check(value)


def _country_or_blank(value: str) -> str:
    if value and value not in ISO_COUNTRIES:
        raise ValueError("must be an ISO 3166-1 alpha-2 country code, e.g. DE or US")
    return value


def _phone_or_blank(value: str) -> str:
    if value and (not set(value) <= set("+0123456789 ()./-") or sum(c.isdigit() for c in value) < 4):
        raise ValueError("must be a phone number: digits, spaces and + ( ) . / - only")
    return value


ContactEmail = Annotated[str, StringConstraints(strip_whitespace=True, max_length=320),
                         AfterValidator(_email_or_blank), Field(examples=["alice@acme.example"])]
Website = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500), AfterValidator(_url_or_blank),
                    Field(examples=["https://acme.example"])]
Country = Annotated[str, StringConstraints(strip_whitespace=True, to_upper=True, max_length=2),
                    AfterValidator(_country_or_blank), Field(description="ISO 3166-1 alpha-2 code", examples=["DE"])]
Phone = Annotated[str, StringConstraints(strip_whitespace=True, max_length=50), AfterValidator(_phone_or_blank),
                  Field(examples=["+49 30 1234567"])]
ContactName = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]
Rank = Annotated[int, Field(ge=0, le=1_000_000, description="Position in the program; higher is better")]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)]
# Tiers are named by slug or id wherever a request refers to one.
TierRef = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
                    Field(description="The tier's slug or id", examples=["gold"])]


# --- tiers -------------------------------------------------------------------

class TierCreate(WriteModel):
    name: Name
    slug: Slug
    rank: Rank | None = Field(None, description="Default: above the highest tier")
    description: LongText = ""


class TierUpdate(WriteModel):
    name: Name | None = None
    slug: Slug | None = None
    rank: Rank | None = None
    description: LongText | None = None


class TierReorder(WriteModel):
    tier_ids: list[uuid.UUID] = Field(description="Every tier's id, lowest first; the tiers keep the set of rank "
                                                  "values they had, handed out in this order", max_length=1000)


class TierRead(ReadModel):
    id: uuid.UUID
    name: str
    slug: str
    rank: int
    description: str
    created_at: datetime
    updated_at: datetime


class TierPublic(ReadModel):
    """A tier as partners see it."""

    name: str
    slug: str
    rank: int
    description: str


# --- partners (staff) ----------------------------------------------------------

class PartnerSort(enum.StrEnum):
    """List order; a leading `-` reverses it. `tier` orders by the tier's rank."""

    name = "name"
    name_desc = "-name"
    slug = "slug"
    slug_desc = "-slug"
    created_at = "created_at"
    created_at_desc = "-created_at"
    status = "status"
    status_desc = "-status"
    tier = "tier"
    tier_desc = "-tier"


class _ContactFields(WriteModel):
    name: Name
    contact_name: ContactName = ""
    contact_email: ContactEmail = ""
    contact_phone: Phone = ""
    website: Website = ""
    country: Country = ""


class PartnerCreate(_ContactFields):
    slug: Slug
    type: PartnerType = PartnerType.developer
    tier: TierRef | None = Field(None, description="Default: the lowest-ranked tier, if there are tiers")
    audience: Audience = Field(Audience.public, description="Which API visibility tiers the partner may see")
    status: PartnerStatus = Field(PartnerStatus.pending, description="`pending` or `active`; later changes go "
                                  "through the activate, suspend and close actions")
    notes: LongText = Field("", description="Staff-only")
    custom_fields: CustomFieldValues = {}

    @field_validator("status")
    @classmethod
    def _initial_status(cls, value: PartnerStatus) -> PartnerStatus:
        if value not in {PartnerStatus.pending, PartnerStatus.active}:
            raise ValueError("a new partner is pending or active; suspend or close it afterwards")
        return value


class PartnerUpdate(WriteModel):
    """Status and tier are not here: they change through their own audited actions."""

    name: Name | None = None
    slug: Slug | None = None
    type: PartnerType | None = None
    audience: Audience | None = None
    contact_name: ContactName | None = None
    contact_email: ContactEmail | None = None
    contact_phone: Phone | None = None
    website: Website | None = None
    country: Country | None = None
    notes: LongText | None = None
    custom_fields: CustomFieldValues | None = Field(None, description="Merged over the stored values; null for a "
                                                    "key removes it")


class SuspendRequest(WriteModel):
    reason: Reason = Field(min_length=1, description="Why; kept on the partner (staff-only) and in the audit log")


class CloseRequest(WriteModel):
    reason: Reason = ""


class TierChange(WriteModel):
    tier: TierRef


class PartnerRead(ReadModel):
    id: uuid.UUID
    name: str
    slug: str
    type: PartnerType
    tier: TierPublic | None
    tier_id: uuid.UUID | None
    audience: Audience
    status: PartnerStatus
    status_reason: str
    contact_name: str
    contact_email: str
    contact_phone: str
    website: str
    country: str
    notes: str
    custom_fields: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, partner: Any, tier: Any | None) -> "PartnerRead":
        fields = {name: getattr(partner, name) for name in cls.model_fields if name != "tier"}
        return cls(**fields, tier=TierPublic.model_validate(tier) if tier is not None else None)


# --- partners (the partner's own view) -------------------------------------------

class PartnerSelfUpdate(WriteModel):
    """What a partner admin may change; slug, tier, status, audience and notes are the program's."""

    name: Name | None = None
    contact_name: ContactName | None = None
    contact_email: ContactEmail | None = None
    contact_phone: Phone | None = None
    website: Website | None = None
    country: Country | None = None
    custom_fields: CustomFieldValues | None = Field(None, description="Merged over the stored values; null for a "
                                                    "key removes it")


class PartnerSelfRead(ReadModel):
    """The partner as its members see it: no staff notes, no hidden custom fields."""

    id: uuid.UUID
    name: str
    slug: str
    type: PartnerType
    tier: TierPublic | None
    audience: Audience
    status: PartnerStatus
    contact_name: str
    contact_email: str
    contact_phone: str
    website: str
    country: str
    custom_fields: dict[str, Any]
    created_at: datetime

    @classmethod
    def of(cls, partner: Any, tier: Any | None, visible_custom_fields: dict[str, Any]) -> "PartnerSelfRead":
        fields = {name: getattr(partner, name) for name in cls.model_fields if name not in {"tier", "custom_fields"}}
        return cls(**fields, tier=TierPublic.model_validate(tier) if tier is not None else None,
                   custom_fields=visible_custom_fields)
