"""The provider's APIs, their metrics (hits and methods) and mapping rules."""
from __future__ import annotations

import enum
import uuid
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from accord.core.db import Entity


class Visibility(enum.StrEnum):
    """Who may see an API or product; ordered from most to least restricted."""

    internal = "internal"
    partner = "partner"
    public = "public"
    open = "open"


class Lifecycle(enum.StrEnum):
    early_access = "early-access"
    beta = "beta"
    ga = "ga"
    deprecated = "deprecated"
    retired = "retired"


class CredentialLocation(enum.StrEnum):
    """Where the gateway reads the caller's credential."""

    authorization = "authorization"  # Authorization: Bearer <key>
    header = "header"  # X-API-Key (name configurable)
    query = "query"  # ?api_key=<key> (name configurable)
    app_id_key = "app-id-key"  # X-App-Id + X-App-Key headers


class Api(Entity):
    __tablename__ = "apis"
    __table_args__ = (UniqueConstraint("hostname", "path_prefix"),)

    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    sandbox_upstream_url: Mapped[str | None] = mapped_column(String(2000))
    production_upstream_url: Mapped[str | None] = mapped_column(String(2000))
    path_prefix: Mapped[str] = mapped_column(String(200))
    # Requests for this host name only ("" = any host); an API bound to a host wins over one that is not.
    hostname: Mapped[str] = mapped_column(String(253), default="", server_default="")
    visibility: Mapped[Visibility] = mapped_column(default=Visibility.partner)
    lifecycle: Mapped[Lifecycle] = mapped_column(default=Lifecycle.ga)
    credential_location: Mapped[CredentialLocation] = mapped_column(default=CredentialLocation.authorization)
    credential_name: Mapped[str] = mapped_column(String(100), default="")
    openapi: Mapped[dict[str, Any] | None] = mapped_column()
    # Limits count per end user (of the partner's app) when requests carry this header.
    end_user_header: Mapped[str] = mapped_column(String(100), default="")
    # Send X-Accord-Partner / X-Accord-Application upstream.
    forward_identity: Mapped[bool] = mapped_column(default=True)


class Metric(Entity):
    """`hits` is every API's root metric; methods are metrics under it."""

    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("api_id", "system_name"),)

    api_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("apis.id", ondelete="CASCADE"), index=True)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("metrics.id", ondelete="CASCADE"))
    system_name: Mapped[str] = mapped_column(String(100))
    friendly_name: Mapped[str] = mapped_column(String(200))
    unit: Mapped[str] = mapped_column(String(50), default="hit")
    description: Mapped[str] = mapped_column(Text, default="")


class MappingRule(Entity):
    """HTTP verb + path template → metric increment (3scale-style)."""

    __tablename__ = "mapping_rules"

    api_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("apis.id", ondelete="CASCADE"), index=True)
    metric_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("metrics.id", ondelete="CASCADE"))
    http_method: Mapped[str] = mapped_column(String(10))
    pattern: Mapped[str] = mapped_column(String(1000))
    delta: Mapped[int] = mapped_column(Integer, default=1)
    position: Mapped[int] = mapped_column(Integer, default=0)
    last: Mapped[bool] = mapped_column(default=False)
