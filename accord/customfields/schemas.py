"""API shapes for custom field definitions."""
from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import Field, StringConstraints

from accord.core.schemas import Name, ReadModel, WriteModel
from accord.customfields.models import FieldTarget, FieldType

FieldKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Choice = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Choices = Annotated[list[Choice], Field(max_length=200)]
Position = Annotated[int, Field(ge=0, le=10_000)]


class FieldDefinitionCreate(WriteModel):
    target: FieldTarget
    key: FieldKey
    label: Name
    type: FieldType = FieldType.text
    required: bool = False
    choices: Choices = []
    position: Position = 0
    hidden: bool = Field(False, description="Kept by staff only; never shown to partners")


class FieldDefinitionUpdate(WriteModel):
    label: Name | None = None
    required: bool | None = None
    choices: Choices | None = None
    position: Position | None = None
    hidden: bool | None = None


class FieldDefinitionRead(ReadModel):
    id: uuid.UUID
    target: FieldTarget
    key: str
    label: str
    type: FieldType
    required: bool
    choices: list[str]
    position: int
    hidden: bool
