"""Program-defined extra fields on partners, users and applications."""
from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from accord.core.db import Entity


class FieldTarget(enum.StrEnum):
    partner = "partner"
    user = "user"
    application = "application"


class FieldType(enum.StrEnum):
    text = "text"
    number = "number"
    choice = "choice"
    boolean = "boolean"


class FieldDefinition(Entity):
    __tablename__ = "field_definitions"
    __table_args__ = (UniqueConstraint("target", "key"),)

    target: Mapped[FieldTarget] = mapped_column()
    key: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(200))
    type: Mapped[FieldType] = mapped_column(default=FieldType.text)
    required: Mapped[bool] = mapped_column(default=False)
    choices: Mapped[list[Any]] = mapped_column(default=list)
    position: Mapped[int] = mapped_column(Integer, default=0)
    # Hidden fields are kept by staff and never shown to partners.
    hidden: Mapped[bool] = mapped_column(default=False)
