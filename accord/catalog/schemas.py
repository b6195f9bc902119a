"""API shapes for the catalog: APIs, metrics and mapping rules."""
from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints, field_validator

from accord.catalog.models import CredentialLocation, Lifecycle, Visibility
from accord.catalog.patterns import validate_pattern
from accord.core.schemas import HttpUrl, LongText, Name, ReadModel, Slug, WriteModel

PathPrefix = Annotated[str, StringConstraints(pattern=r"^/[A-Za-z0-9._~/-]*$", max_length=200),
                       Field(description="Requests whose path starts with this reach this API", examples=["/social"])]
_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")


def _hostname(value: str) -> str:
    value = value.lower()
    if value and not _HOSTNAME.fullmatch(value):
        raise ValueError("a host name such as api.example.com: letters, digits, hyphens and dots, no port")
    if value.startswith("sandbox."):
        raise ValueError("sandbox.<host> is the sandbox of <host>: bind the API to <host>")
    return value


Hostname = Annotated[str, StringConstraints(max_length=253), AfterValidator(_hostname), Field(
    description="Only requests for this host (the Host header, port aside) reach this API; \"\" for any host. "
                "sandbox.<host> reaches its sandbox", examples=["api.example.com"])]
HttpVerb = Annotated[str, StringConstraints(pattern=r"^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS|ANY)$")]
MetricName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")]
OpenApiInput = Annotated[dict[str, Any] | str | None, Field(
    description="OpenAPI document as a JSON object, or as JSON or YAML text; validated")]


class Upstreams(WriteModel):
    sandbox: HttpUrl | None = None
    production: HttpUrl | None = None


class ApiCreate(WriteModel):
    name: Name
    slug: Slug
    description: LongText = ""
    path_prefix: PathPrefix
    hostname: Hostname = ""
    upstreams: Upstreams = Upstreams()
    visibility: Visibility = Visibility.partner
    lifecycle: Lifecycle = Lifecycle.ga
    credential_location: CredentialLocation = CredentialLocation.authorization
    credential_name: Annotated[str, StringConstraints(max_length=100, pattern=r"^[A-Za-z0-9_-]*$")] = ""
    openapi: OpenApiInput = None
    end_user_header: Annotated[str, StringConstraints(max_length=100, pattern=r"^[A-Za-z0-9-]*$"), Field(
        description="Header naming the end user; limits then count per end user")] = ""
    forward_identity: bool = Field(True, description="Send X-Accord-Partner and X-Accord-Application upstream")


class ApiUpdate(WriteModel):
    name: Name | None = None
    slug: Slug | None = None
    description: LongText | None = None
    path_prefix: PathPrefix | None = None
    hostname: Hostname | None = None
    upstreams: Upstreams | None = None
    visibility: Visibility | None = None
    lifecycle: Lifecycle | None = None
    credential_location: CredentialLocation | None = None
    credential_name: Annotated[str, StringConstraints(max_length=100, pattern=r"^[A-Za-z0-9_-]*$")] | None = None
    openapi: OpenApiInput = None
    end_user_header: Annotated[str, StringConstraints(max_length=100, pattern=r"^[A-Za-z0-9-]*$")] | None = None
    forward_identity: bool | None = None


class ApiRead(ReadModel):
    id: uuid.UUID
    name: str
    slug: str
    description: str
    path_prefix: str
    hostname: str
    upstreams: Upstreams
    visibility: Visibility
    lifecycle: Lifecycle
    credential_location: CredentialLocation
    credential_name: str
    has_openapi: bool
    end_user_header: str
    forward_identity: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, api: Any) -> "ApiRead":
        return cls(
            id=api.id, name=api.name, slug=api.slug, description=api.description, path_prefix=api.path_prefix,
            hostname=api.hostname, upstreams=Upstreams.model_construct(sandbox=api.sandbox_upstream_url,
                                                production=api.production_upstream_url),
            visibility=api.visibility, lifecycle=api.lifecycle, credential_location=api.credential_location,
            credential_name=api.credential_name, has_openapi=api.openapi is not None,
            end_user_header=api.end_user_header, forward_identity=api.forward_identity,
            created_at=api.created_at, updated_at=api.updated_at,
        )


class MetricCreate(WriteModel):
    system_name: MetricName
    friendly_name: Name
    parent: MetricName | None = Field(None, description="System name of the parent metric; default `hits`")
    unit: Annotated[str, StringConstraints(min_length=1, max_length=50)] = "hit"
    description: LongText = ""


class MetricUpdate(WriteModel):
    friendly_name: Name | None = None
    unit: Annotated[str, StringConstraints(min_length=1, max_length=50)] | None = None
    description: LongText | None = None


class MetricRead(ReadModel):
    id: uuid.UUID
    api_id: uuid.UUID
    parent_id: uuid.UUID | None
    system_name: str
    friendly_name: str
    unit: str
    description: str


class MappingRuleCreate(WriteModel):
    http_method: HttpVerb
    pattern: Annotated[str, StringConstraints(min_length=1, max_length=1000), Field(
        description="Path template with `{var}` segments, optional `$` for an exact end and an optional "
                    "`?query=value` match", examples=["/users/{id}$", "/search?q={q}"])]
    metric: MetricName = Field(description="System name of the metric this rule increments")
    delta: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    position: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    last: bool = Field(False, description="Stop matching further rules when this one matches")

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        validate_pattern(value)
        return value


class MappingRuleUpdate(WriteModel):
    http_method: HttpVerb | None = None
    pattern: Annotated[str, StringConstraints(min_length=1, max_length=1000)] | None = None
    metric: MetricName | None = None
    delta: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    position: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    last: bool | None = None

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            validate_pattern(value)
        return value


class MappingRuleRead(ReadModel):
    id: uuid.UUID
    api_id: uuid.UUID
    metric_id: uuid.UUID
    http_method: str
    pattern: str
    delta: int
    position: int
    last: bool


class GenerateResult(ReadModel):
    metrics_created: list[str]
    rules_created: list[str]
