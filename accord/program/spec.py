"""The program file, as a Pydantic model: what `accord apply` reads and `accord export` writes.

Everything is identified by a natural key, never by a database id: tiers, APIs,
products and partners by slug, plans by slug within their product, custom fields
by (target, key), metrics by name and mapping rules by (method, pattern) within
their API, limits by (api, metric, period) within their plan, members by email,
subscriptions by product, applications by name within their partner and
credentials by name within their application.

A field left out takes the default written here, and `accord export` leaves out
every field that is at its default. A few fields have no default on purpose (a
visibility, a partner's type, audience and status, a member's role) so the file
always says them.
"""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator, model_validator

from accord.agreements.models import RequirementScope
from accord.apps.models import ApplicationState, CredentialKind, Environment
from accord.catalog.models import CredentialLocation, Lifecycle, Visibility
from accord.catalog.patterns import validate_pattern
from accord.catalog.schemas import Hostname, MetricName, PathPrefix
from accord.core.schemas import HttpUrl, LongText, Name, Slug
from accord.customfields.models import FieldType
from accord.customfields.schemas import FieldDefinitionCreate
from accord.partners.models import Audience, PartnerStatus, PartnerType
from accord.partners.schemas import ContactEmail, ContactName, Country, Phone, Rank, Website
from accord.plans.models import Period
from accord.teams.models import MemberRole
from accord.users.schemas import Email

ROOT_METRIC = "hits"
# What `create_api` gives the root metric; a declared `hits` defaults to the same.
ROOT_METRIC_DEFAULTS = {"friendly_name": "Hits", "unit": "hit", "description": "Every call to the API"}

# "api.metric": an API slug (no dots) and a metric name (which may contain dots).
MethodRef = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?\.[a-z0-9][a-z0-9_.-]{0,99}$"),
    Field(description="`api.metric`", examples=["social.read_users"]),
]


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


# HTTP verbs may be written in any case; they are stored upper case.
RuleVerb = Annotated[str, BeforeValidator(_upper),
                     StringConstraints(pattern=r"^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS|ANY)$")]
PlanVerb = Annotated[str, BeforeValidator(_upper),
                     StringConstraints(pattern=r"^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS)$")]
Money = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]
UnitPrice = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=6)]
Units = Annotated[int, Field(ge=0, le=2**63 - 1)]


def split_method(ref: str) -> tuple[str, str]:
    api, _, metric = ref.partition(".")
    return api, metric


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _no_duplicates(items: list[Any], key: Any, what: str) -> list[Any]:
    seen: dict[Any, int] = {}
    for index, item in enumerate(items):
        k = key(item)
        if k in seen:
            raise ValueError(f"{what} {k if isinstance(k, str) else '/'.join(map(str, k))!r} is listed twice "
                             f"(items {seen[k]} and {index})")
        seen[k] = index
    return items


# --- program tiers and custom fields -------------------------------------------

class TierSpec(Spec):
    slug: Slug
    name: Name
    rank: Rank
    description: LongText = ""


class CustomFieldSpec(FieldDefinitionCreate):
    """A custom field as the admin API defines it; the file's choices are checked as it is read."""

    @model_validator(mode="after")
    def _choices(self) -> "CustomFieldSpec":
        if self.type == FieldType.choice and not self.choices:
            raise ValueError("a choice field needs at least one choice")
        if self.type != FieldType.choice and self.choices:
            raise ValueError("only choice fields have choices")
        return self


# --- the catalog -----------------------------------------------------------------

class UpstreamsSpec(Spec):
    sandbox: HttpUrl | None = None
    production: HttpUrl | None = None


class MetricSpec(Spec):
    name: MetricName
    friendly_name: Name | None = Field(None, description="Default: the name (`Hits` for the root metric)")
    parent: MetricName | None = Field(None, description="Default: `hits`")
    unit: Annotated[str, StringConstraints(min_length=1, max_length=50)] | None = None
    description: LongText | None = None

    def desired(self) -> dict[str, Any]:
        """The metric's fields with defaults filled in (the root metric has its own)."""
        root = self.name == ROOT_METRIC
        return {
            "friendly_name": self.friendly_name or (ROOT_METRIC_DEFAULTS["friendly_name"] if root else self.name),
            "unit": self.unit or "hit",
            "description": self.description if self.description is not None else
            (ROOT_METRIC_DEFAULTS["description"] if root else ""),
        }


class MappingRuleSpec(Spec):
    method: RuleVerb
    pattern: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    metric: MetricName
    delta: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    position: Annotated[int, Field(ge=0, le=1_000_000)] | None = Field(
        None, description="Default: the rule's index in the list, so rules match in file order")
    last: bool = False

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        validate_pattern(value)
        return value


class ApiSpec(Spec):
    slug: Slug
    name: Name
    description: LongText = ""
    path_prefix: PathPrefix
    hostname: Hostname = ""
    visibility: Visibility
    lifecycle: Lifecycle = Lifecycle.ga
    credential_location: CredentialLocation = CredentialLocation.authorization
    credential_name: Annotated[str, StringConstraints(max_length=100, pattern=r"^[A-Za-z0-9_-]*$")] = ""
    upstreams: UpstreamsSpec = UpstreamsSpec()
    openapi: Any = Field(None, description="An OpenAPI document inline, or a path relative to the program file")
    metrics: list[MetricSpec] = []
    mapping_rules: list[MappingRuleSpec] = []

    @field_validator("openapi")
    @classmethod
    def _openapi(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, (dict, str)):
            raise ValueError("must be an OpenAPI document or the path of one")
        return value

    @field_validator("metrics")
    @classmethod
    def _unique_metrics(cls, value: list[MetricSpec]) -> list[MetricSpec]:
        return _no_duplicates(value, lambda m: m.name, "metric")

    @field_validator("mapping_rules")
    @classmethod
    def _unique_rules(cls, value: list[MappingRuleSpec]) -> list[MappingRuleSpec]:
        return _no_duplicates(value, lambda r: (r.method, r.pattern), "mapping rule")

    def rule_position(self, index: int) -> int:
        rule = self.mapping_rules[index]
        return rule.position if rule.position is not None else index


# --- products and plans -----------------------------------------------------------

class LimitSpec(Spec):
    api: Slug
    metric: MetricName
    period: Period
    value: Units


class UnitPriceSpec(Spec):
    api: Slug
    metric: MetricName
    from_units: Units = 0
    to_units: Units | None = None
    unit_price: UnitPrice


class PricingSpec(Spec):
    setup_fee: Money = Decimal("0")
    monthly_fee: Money = Decimal("0")
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "USD"
    unit_prices: list[UnitPriceSpec] = []


class PlanSpec(Spec):
    slug: Slug
    name: Name
    description: LongText = ""
    notes: LongText = ""
    default: bool = Field(False, description="The product's default plan (sign-ups get it)")
    published: bool = True
    approval_required: bool = False
    trial_days: Annotated[int, Field(ge=0, le=3650)] = 0
    min_tier: Slug | None = None
    allowed_http_methods: Annotated[list[PlanVerb], Field(min_length=1, max_length=7)] | None = None
    limits: list[LimitSpec] = []
    disabled_methods: list[MethodRef] = []
    pricing: PricingSpec = PricingSpec()

    @field_validator("limits")
    @classmethod
    def _unique_limits(cls, value: list[LimitSpec]) -> list[LimitSpec]:
        return _no_duplicates(value, lambda x: (x.api, x.metric, x.period.value), "limit")

    @field_validator("disabled_methods")
    @classmethod
    def _unique_disabled(cls, value: list[str]) -> list[str]:
        return _no_duplicates(value, lambda x: x, "method")

    @field_validator("allowed_http_methods")
    @classmethod
    def _unique_verbs(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _no_duplicates(value, lambda x: x, "HTTP method")


class ProductSpec(Spec):
    slug: Slug
    name: Name
    description: LongText = ""
    notes: LongText = ""
    visibility: Visibility
    apis: list[Slug] = []
    methods: list[MethodRef] = Field([], description="Selected methods; an API without any is in whole")
    plans: list[PlanSpec] = []

    @field_validator("apis")
    @classmethod
    def _unique_apis(cls, value: list[str]) -> list[str]:
        return _no_duplicates(value, lambda x: x, "API")

    @field_validator("methods")
    @classmethod
    def _unique_methods(cls, value: list[str]) -> list[str]:
        return _no_duplicates(value, lambda x: x, "method")

    @field_validator("plans")
    @classmethod
    def _unique_plans(cls, value: list[PlanSpec]) -> list[PlanSpec]:
        _no_duplicates(value, lambda p: p.slug, "plan")
        defaults = [p.slug for p in value if p.default]
        if len(defaults) > 1:
            raise ValueError(f"a product has one default plan, not {len(defaults)} ({', '.join(defaults)})")
        return value


# --- partners -----------------------------------------------------------------------

class ContactSpec(Spec):
    name: ContactName = ""
    email: ContactEmail = ""
    phone: Phone = ""


class MemberSpec(Spec):
    email: Email
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = Field(
        None, description="The person's name; left as it is when not given")
    role: MemberRole


class SubscriptionSpec(Spec):
    product: Slug
    plan: Slug


class CredentialSpec(Spec):
    name: Name
    kind: CredentialKind = CredentialKind.api_key


class ApplicationSpec(Spec):
    name: Name
    environment: Environment
    state: ApplicationState | None = Field(
        None, description="Default: `live` in sandbox, `pending` (awaiting review) in production")
    description: LongText = ""
    custom_fields: dict[str, Any] = {}
    subscriptions: list[Slug] = Field([], description="Products whose subscription the application uses")
    credentials: list[CredentialSpec] = []

    @field_validator("subscriptions")
    @classmethod
    def _unique_subscriptions(cls, value: list[str]) -> list[str]:
        return _no_duplicates(value, lambda x: x, "product")

    @field_validator("credentials")
    @classmethod
    def _unique_credentials(cls, value: list[CredentialSpec]) -> list[CredentialSpec]:
        return _no_duplicates(value, lambda c: c.name, "credential")

    @property
    def desired_state(self) -> ApplicationState:
        return self.state or default_application_state(self.environment)


def default_application_state(environment: Environment) -> ApplicationState:
    return ApplicationState.live if environment == Environment.sandbox else ApplicationState.pending


class PartnerSpec(Spec):
    slug: Slug
    name: Name
    type: PartnerType
    tier: Slug | None = Field(None, description="Left as it is when not given; new partners get the lowest tier")
    audience: Audience
    status: PartnerStatus
    website: Website = ""
    country: Country = ""
    notes: LongText = ""
    contact: ContactSpec = ContactSpec()
    custom_fields: dict[str, Any] = {}
    members: list[MemberSpec] = []
    subscriptions: list[SubscriptionSpec] = []
    applications: list[ApplicationSpec] = []

    @field_validator("members")
    @classmethod
    def _unique_members(cls, value: list[MemberSpec]) -> list[MemberSpec]:
        return _no_duplicates(value, lambda m: m.email, "member")

    @field_validator("subscriptions")
    @classmethod
    def _unique_subscriptions(cls, value: list[SubscriptionSpec]) -> list[SubscriptionSpec]:
        return _no_duplicates(value, lambda s: s.product, "subscription to product")

    @field_validator("applications")
    @classmethod
    def _unique_applications(cls, value: list[ApplicationSpec]) -> list[ApplicationSpec]:
        return _no_duplicates(value, lambda a: a.name, "application")


# --- agreements (applied by accord.program.apply_agreements) ----------------------------

def _utc(value: Any) -> Any:
    from datetime import UTC, datetime

    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # YAML timestamps without an offset are UTC
    return value


class AgreementVersionSpec(Spec):
    """A version, by number. Published versions never change; only the last may be a draft."""

    number: Annotated[int, Field(ge=1)]
    body: LongText
    changes_summary: LongText = ""
    material: bool = True
    grace_days: Annotated[int, Field(ge=0, le=3650)] = 30
    effective_at: Annotated[datetime, BeforeValidator(_utc)] | None = Field(None, description="Default: when published")
    published_at: Annotated[datetime, BeforeValidator(_utc)] | None = Field(
        None, description="When it was published (for versions brought over from elsewhere); default: when applied")
    draft: bool = Field(False, description="Not published yet")


class AgreementRequirementSpec(Spec):
    scope: RequirementScope
    stage: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    product: Slug | None = None
    tier: Slug | None = None
    partner_type: PartnerType | None = None

    @model_validator(mode="after")
    def _one_target(self) -> "AgreementRequirementSpec":
        wanted = {"stage": "stage", "product": "product", "tier": "tier", "partner_type": "partner_type"}.get(
            self.scope.value)
        for name in ("stage", "product", "tier", "partner_type"):
            given = getattr(self, name) is not None
            if name == wanted and not given:
                raise ValueError(f"scope {self.scope.value} needs `{name}`")
            if name != wanted and given:
                raise ValueError(f"`{name}` is only for scope {name}")
        return self

    def key(self) -> tuple[str, str]:
        target = self.stage or self.product or self.tier or (self.partner_type.value if self.partner_type else "")
        return self.scope.value, target


class AgreementSpec(Spec):
    slug: Slug
    title: Name
    description: LongText = ""
    versions: list[AgreementVersionSpec] = []
    requirements: list[AgreementRequirementSpec] = []

    @field_validator("versions")
    @classmethod
    def _numbered(cls, value: list[AgreementVersionSpec]) -> list[AgreementVersionSpec]:
        for index, version in enumerate(value):
            if version.number != index + 1:
                raise ValueError(f"versions are numbered 1, 2, 3 … in order; item {index} is {version.number}")
            if version.draft and index != len(value) - 1:
                raise ValueError(f"only the last version may be a draft (version {version.number} is one)")
        return value

    @field_validator("requirements")
    @classmethod
    def _unique_requirements(cls, value: list[AgreementRequirementSpec]) -> list[AgreementRequirementSpec]:
        return _no_duplicates(value, lambda r: r.key(), "requirement")


# --- the whole file --------------------------------------------------------------------

class ProgramSpec(Spec):
    tiers: list[TierSpec] = []
    custom_fields: list[CustomFieldSpec] = []
    apis: list[ApiSpec] = []
    products: list[ProductSpec] = []
    agreements: list[AgreementSpec] = []
    partners: list[PartnerSpec] = []

    @field_validator("agreements")
    @classmethod
    def _unique_agreements(cls, value: list[AgreementSpec]) -> list[AgreementSpec]:
        return _no_duplicates(value, lambda a: a.slug, "agreement")

    @field_validator("tiers")
    @classmethod
    def _unique_tiers(cls, value: list[TierSpec]) -> list[TierSpec]:
        _no_duplicates(value, lambda t: t.slug, "tier")
        return _no_duplicates(value, lambda t: str(t.rank), "rank")

    @field_validator("custom_fields")
    @classmethod
    def _unique_fields(cls, value: list[CustomFieldSpec]) -> list[CustomFieldSpec]:
        return _no_duplicates(value, lambda f: (f.target.value, f.key), "custom field")

    @field_validator("apis")
    @classmethod
    def _unique_apis(cls, value: list[ApiSpec]) -> list[ApiSpec]:
        _no_duplicates(value, lambda a: a.slug, "API")
        return _no_duplicates(value, lambda a: f"{a.path_prefix} on {a.hostname}" if a.hostname else a.path_prefix,
                              "path prefix")

    @field_validator("products")
    @classmethod
    def _unique_products(cls, value: list[ProductSpec]) -> list[ProductSpec]:
        return _no_duplicates(value, lambda p: p.slug, "product")

    @field_validator("partners")
    @classmethod
    def _unique_partners(cls, value: list[PartnerSpec]) -> list[PartnerSpec]:
        return _no_duplicates(value, lambda p: p.slug, "partner")
