"""The diff `accord apply` shows: one Change per thing created, updated or removed."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from typing import Any

from rich.console import Console
from rich.markup import escape

CREATE, UPDATE, DELETE = "create", "update", "delete"
# Removals that keep the row for the record instead of deleting it.
REVOKE, CANCEL, CLOSE, REMOVE = "revoke", "cancel", "close", "remove"
_SYMBOLS = {CREATE: ("+", "green"), UPDATE: ("~", "yellow")}


@dataclass
class FieldChange:
    name: str
    old: Any
    new: Any


@dataclass
class Change:
    action: str  # create | update | delete | revoke | cancel | close | remove
    kind: str  # api, metric, plan, partner, …
    key: str  # the thing's natural key, e.g. `social/read_users`
    fields: list[FieldChange] = field(default_factory=list)
    note: str = ""

    @property
    def symbol(self) -> str:
        return _SYMBOLS.get(self.action, ("-", "red"))[0]

    def summary(self) -> str:
        note = f" ({self.note})" if self.note else ""
        return f"{self.symbol} {self.action} {self.kind} {self.key}{note}"


def show(value: Any) -> str:
    """A short, unambiguous rendering of a value for the diff."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict) and len(json.dumps(value, default=str)) > 80:
        return f"{{…{len(value)} keys}}"
    if isinstance(value, (list, dict)):
        text = json.dumps(value, default=str, ensure_ascii=False)
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = str(value)
    return text if len(text) <= 80 else text[:77] + "…"


def diff(current: dict[str, Any], desired: dict[str, Any]) -> list[FieldChange]:
    """The fields of `desired` whose value differs from `current` (in `desired`'s order)."""
    return [FieldChange(name, current.get(name), value) for name, value in desired.items()
            if _normal(current.get(name)) != _normal(value)]


def _normal(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return value.normalize()
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    return value


def print_changes(console: Console, changes: list[Change]) -> None:
    for change in changes:
        color = _SYMBOLS.get(change.action, ("-", "red"))[1]
        console.print(f"[{color}]{escape(change.summary())}[/{color}]", highlight=False, soft_wrap=True)
        if change.action == UPDATE:
            for item in change.fields:
                console.print(f"    {escape(item.name)}: {escape(show(item.old))} → {escape(show(item.new))}",
                              highlight=False, soft_wrap=True)


def count_by_action(changes: list[Change]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.action] = counts.get(change.action, 0) + 1
    return counts
