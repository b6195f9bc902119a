"""The immutable, in-memory view of the program that the gateway serves from.

Built off the hot path by `accord.gateway.builder`; every lookup a request
needs is a dict access. Plain frozen dataclasses with slots: no ORM, no Pydantic.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# Denial reasons: the stable `type` slugs of the gateway's problem answers.
UNKNOWN_CREDENTIAL = "credential-unknown"
MISSING_CREDENTIAL = "credential-missing"
REVOKED_CREDENTIAL = "credential-revoked"
EXPIRED_CREDENTIAL = "credential-expired"
APPLICATION_SUSPENDED = "application-suspended"
APPLICATION_PENDING = "application-pending"
PARTNER_SUSPENDED = "partner-suspended"
PARTNER_INACTIVE = "partner-inactive"
WRONG_ENVIRONMENT = "wrong-environment"
NOT_IN_PRODUCTS = "api-not-in-products"
ABOVE_VISIBILITY = "above-visibility-tier"
METHOD_NOT_IN_PRODUCT = "method-not-in-product"
HTTP_METHOD_DISABLED = "http-method-disabled"
METHOD_DISABLED = "method-disabled"
SUBSCRIPTION_INACTIVE = "subscription-inactive"
LIMIT_REACHED = "limit-reached"
NO_ROUTE = "no-route"
DOT_SEGMENT = "dot-segment-in-path"
NO_MAPPING_RULE = "no-mapping-rule"
NO_UPSTREAM = "no-upstream"
UPSTREAM_UNREACHABLE = "upstream-unreachable"
UPSTREAM_TIMEOUT = "upstream-timeout"
LIMITER_UNAVAILABLE = "limiter-unavailable"
AGREEMENT_REQUIRED = "agreement-required"


@dataclass(frozen=True, slots=True)
class CompiledRule:
    http_method: str  # GET … or ANY
    regex: re.Pattern[str]  # matches the path after the API prefix
    query: tuple[tuple[str, str | None], ...]  # (key, exact value or None for a {var})
    metric_id: str
    delta: int
    last: bool


@dataclass(frozen=True, slots=True)
class ApiEntry:
    id: str
    slug: str
    prefix: str
    visibility: str
    upstreams: dict[str, str | None]  # environment -> base URL
    credential_location: str  # authorization | header | query | app-id-key
    credential_name: str
    rules: tuple[CompiledRule, ...]
    metric_parents: dict[str, str | None]  # metric id -> parent metric id
    metric_names: dict[str, str]  # metric id -> system name
    upstream_secret: str  # sent upstream so it can refuse traffic that bypassed the gateway
    end_user_header: str  # lower-case header name, or "" (limits count per end user when present)
    forward_identity: bool
    stripped_headers: frozenset[bytes]  # request headers never forwarded (hop-by-hop, the credential, ours)
    mock_examples: dict[tuple[str, str], tuple[int, bytes]] = field(default_factory=dict)
    hostname: str = ""  # served only for this host (lower case, no port); "" for any


@dataclass(frozen=True, slots=True)
class LimitRule:
    metric_id: str
    period: str  # second … eternity (accord.plans.models.Period values)
    value: int


@dataclass(frozen=True, slots=True)
class Access:
    """What one application may do on one API, through one subscription's plan."""

    subscription_id: str
    plan_id: str
    plan_slug: str
    denial: str | None  # a reason the whole API is refused (subscription inactive, above visibility) or None
    allowed_http_methods: frozenset[str] | None  # None = all
    allowed_metrics: frozenset[str] | None  # None = whole API; else the product's selected methods
    disabled_metrics: frozenset[str]
    limits: tuple[LimitRule, ...]
    # Production calls are refused from this epoch second on, with this detail, because the partner has not
    # accepted an agreement the product needs (accord.agreements.gate); None when nothing is pending.
    agreement_due: tuple[float, str] | None = None


@dataclass(frozen=True, slots=True)
class AppEntry:
    id: str
    public_app_id: str
    partner_id: str
    environment: str  # sandbox | production
    state: str  # pending | live | suspended
    access: dict[str, Access]  # api id -> access


@dataclass(frozen=True, slots=True)
class PartnerEntry:
    id: str
    slug: str
    status: str
    audience: str


@dataclass(frozen=True, slots=True)
class CredentialEntry:
    id: str
    application_id: str
    kind: str  # api-key | app-key
    expires_at: float | None  # epoch seconds
    revoked: bool


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    built_at: float
    apis_by_prefix: tuple[tuple[str, ApiEntry], ...]  # those bound to a host first, then longest prefix first
    credentials: dict[str, CredentialEntry]  # keyed hash -> credential
    apps: dict[str, AppEntry]  # application id -> app
    apps_by_public_id: dict[str, AppEntry]
    partners: dict[str, PartnerEntry]
    routes_by_host: bool = False  # some API is bound to a host name: requests' hosts are looked at

    def api_for(self, path: str, host: str = "") -> tuple[ApiEntry, str] | None:
        """The API whose prefix the path starts with (at a segment boundary), and the rest of the path.

        An API bound to a host name serves only requests for that `host` (lower case, without a port),
        and comes before those that serve any host, as in Kong's and nginx's routing.
        """
        for prefix, api in self.apis_by_prefix:
            if api.hostname and api.hostname != host:
                continue
            if path.startswith(prefix):
                rest = path[len(prefix):]
                if not rest or rest[0] == "/" or prefix.endswith("/"):
                    return api, rest or "/"
        return None


EMPTY = Snapshot(version=0, built_at=0.0, apis_by_prefix=(), credentials={}, apps={}, apps_by_public_id={},
                 partners={})
