"""The integration audit as CSV (one row per partner; lists joined with `; `) and as JSON.

Both take the rows of `service.audit_all` (dicts shaped like `PartnerAudit`), so the whole
program is written without building a model per item.
"""
from __future__ import annotations

import csv
import io
import typing
from datetime import datetime
from functools import cache
from typing import Any

from pydantic import BaseModel, TypeAdapter
from typing_extensions import TypedDict

from accord.core.collector import collector_paused
from accord.integrations.schemas import PartnerAudit

Row = dict[str, Any]

COLUMNS = ("partner_id", "slug", "name", "type", "status", "audience", "tier", "stage", "onboarding_status",
           "subscriptions", "applications", "credentials", "oldest_credential_days", "longest_unused_days",
           "agreements_signed", "agreements_missing", "first_call_at", "last_call_at", "calls_30d", "flags",
           "flag_details")
# A cell starting with one of these is a formula to a spreadsheet: partner-chosen names are kept inert.
_FORMULA_STARTS = frozenset("=+-@\t\r")


def _when(moment: datetime | None) -> str:
    return moment.isoformat() if moment else ""


def _cell(value: Any) -> Any:
    if value.__class__ is str and value[:1] in _FORMULA_STARTS:
        return "'" + value
    return value


def csv_cells(r: Row) -> list[Any]:
    """One partner's CSV row, in `COLUMNS` order."""
    credentials = r["credentials"]
    return [_cell(value) for value in (
        r["partner_id"], r["slug"], r["name"], r["type"], r["status"], r["audience"], r["tier"] or "",
        r["stage"] or "", r["onboarding_status"] or "",
        "; ".join(f"{s['product']}/{s['plan']} ({s['state']})" for s in r["subscriptions"]),
        "; ".join(f"{a['name']} ({a['environment']}, {a['state']})" for a in r["applications"]),
        len(credentials),
        max((c["age_days"] for c in credentials), default=""),
        max((c["unused_days"] for c in credentials), default=""),
        "; ".join(f"{a['slug']} v{a['accepted_version_number']}" for a in r["agreements_signed"]),
        "; ".join(f"{a['slug']} v{a['version_number']} ({a['state']})" for a in r["agreements_missing"]),
        _when(r["first_call_at"]), _when(r["last_call_at"]), r["calls_30d"],
        "; ".join(str(f["flag"]) for f in r["flags"]),
        "; ".join(f"{f['flag']}: {f['detail']}" for f in r["flags"]))]


def to_csv(rows: list[Row]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    with collector_paused():
        writer.writerows(map(csv_cells, rows))
    return out.getvalue()


def _row_type(annotation: Any) -> Any:
    """`annotation` with every model replaced by a TypedDict of the same fields (in the same order)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return TypedDict(f"{annotation.__name__}Row",  # type: ignore[operator]
                         {name: _row_type(field.annotation) for name, field in annotation.model_fields.items()})
    if typing.get_origin(annotation) is list:
        return list[_row_type(typing.get_args(annotation)[0])]  # type: ignore[misc]
    return annotation


@cache
def _rows_adapter() -> TypeAdapter[Any]:
    # Serializing by the declared types (rather than guessing each value's) is about a third faster,
    # and derived from `PartnerAudit` the export cannot drift from the API's shape.
    return TypeAdapter(list[_row_type(PartnerAudit)])  # type: ignore[misc]


def to_json_bytes(rows: list[Row]) -> bytes:
    # pydantic's serializer (in Rust) writes UUIDs, times and enums exactly as the API's models do.
    return _rows_adapter().dump_json(rows, indent=2) + b"\n"


def to_json(rows: list[Row]) -> str:
    return to_json_bytes(rows).decode()
