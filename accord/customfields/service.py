"""Custom field definitions and the validation of their values on every write."""
from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.audit import service as audit
from accord.auth.actor import Actor
from accord.core.errors import ProblemError, conflict, invalid, not_found, reject_nulls
from accord.customfields.models import FieldDefinition, FieldTarget, FieldType
from accord.customfields.schemas import FieldDefinitionCreate, FieldDefinitionUpdate


def list_definitions(target: FieldTarget | None = None) -> Select:
    stmt = select(FieldDefinition).order_by(FieldDefinition.target, FieldDefinition.position, FieldDefinition.key)
    return stmt.where(FieldDefinition.target == target) if target else stmt


async def definitions_for(session: AsyncSession, target: FieldTarget) -> list[FieldDefinition]:
    return list(await session.scalars(list_definitions(target)))


def _coerce(definition: FieldDefinition, value: Any) -> Any:
    """The value in its stored form, or ValueError with the reason it is wrong."""
    if definition.type == FieldType.text:
        if not isinstance(value, str):
            raise ValueError("must be text")
        if len(value) > 10_000:
            raise ValueError("must be at most 10000 characters")
        return value
    if definition.type == FieldType.number:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("must be a number")
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        return value
    if definition.type == FieldType.boolean:
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value
    if value not in definition.choices:
        raise ValueError(f"must be one of {', '.join(map(str, definition.choices))}")
    return value


async def validate_values(
    session: AsyncSession,
    target: FieldTarget,
    values: dict[str, Any] | None,
    *,
    existing: dict[str, Any] | None = None,
    field: str = "custom_fields",
    include_hidden: bool = True,
) -> dict[str, Any]:
    """Merge `values` over `existing` and check them against the target's definitions.

    A key set to null is removed. Unknown keys, wrong types and missing required
    fields are all reported at once, each naming `custom_fields.<key>`.
    With `include_hidden=False` (a partner writing) hidden fields cannot be set.
    """
    definitions = {d.key: d for d in await definitions_for(session, target)}
    merged = dict(existing or {})
    errors: list[dict[str, str]] = []
    for key, value in (values or {}).items():
        definition = definitions.get(key)
        if definition is None or (definition.hidden and not include_hidden):
            errors.append({"field": f"{field}.{key}", "reason": "no such custom field"})
            continue
        if value is None:
            merged.pop(key, None)
            continue
        try:
            merged[key] = _coerce(definition, value)
        except ValueError as exc:
            errors.append({"field": f"{field}.{key}", "reason": str(exc)})
    for key, definition in definitions.items():
        if definition.required and key not in merged and (include_hidden or not definition.hidden):
            errors.append({"field": f"{field}.{key}", "reason": "is required"})
    if errors:
        raise ProblemError("validation-error", "; ".join(f"{e['field']}: {e['reason']}" for e in errors), errors)
    return merged


def visible_values(values: dict[str, Any], definitions: list[FieldDefinition]) -> dict[str, Any]:
    """The values a partner may see: hidden fields removed."""
    hidden = {d.key for d in definitions if d.hidden}
    return {k: v for k, v in values.items() if k not in hidden}


async def get_definition(session: AsyncSession, definition_id: uuid.UUID) -> FieldDefinition:
    definition = await session.get(FieldDefinition, definition_id)
    if definition is None:
        raise not_found("custom field")
    return definition


def _check_choices(field_type: FieldType, choices: list[Any]) -> None:
    if field_type == FieldType.choice and not choices:
        raise invalid("choices", "a choice field needs at least one choice")
    if field_type != FieldType.choice and choices:
        raise invalid("choices", "only choice fields have choices")


async def create_definition(session: AsyncSession, actor: Actor, data: FieldDefinitionCreate) -> FieldDefinition:
    if await session.scalar(select(FieldDefinition.id).where(FieldDefinition.target == data.target,
                                                             FieldDefinition.key == data.key)):
        raise conflict("key", f"a {data.target} field {data.key!r} already exists")
    _check_choices(data.type, data.choices)
    definition = FieldDefinition(**data.model_dump())
    session.add(definition)
    await audit.record(session, actor, "custom_field.created", definition)
    return definition


async def update_definition(session: AsyncSession, actor: Actor, definition_id: uuid.UUID,
                            data: FieldDefinitionUpdate) -> FieldDefinition:
    definition = await get_definition(session, definition_id)
    before = audit.snapshot(definition)
    changes = data.model_dump(exclude_unset=True)
    reject_nulls(changes)
    for key, value in changes.items():
        setattr(definition, key, value)
    _check_choices(definition.type, definition.choices)
    await audit.record(session, actor, "custom_field.updated", definition, before=before)
    return definition


async def delete_definition(session: AsyncSession, actor: Actor, definition_id: uuid.UUID) -> None:
    definition = await get_definition(session, definition_id)
    before = audit.snapshot(definition)
    await session.delete(definition)
    await audit.record(session, actor, "custom_field.deleted", target_type="field_definitions",
                       target_id=str(definition_id), before=before)
