"""The integration audit as CSV (one row per partner; lists joined with `; `) and as JSON.

Both take the rows of `service.audit_all` (dicts shaped like `PartnerAudit`), so the whole
program is written without building a model per item.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic_core import to_json as to_json_bytes

Row = dict[str, Any]


def _when(moment: datetime | None) -> str:
    return moment.isoformat() if moment else ""


def _joined(items: list[Any], show: Callable[[Any], str]) -> str:
    return "; ".join(show(item) for item in items)


COLUMNS: dict[str, Callable[[Row], Any]] = {
    "partner_id": lambda r: r["partner_id"],
    "slug": lambda r: r["slug"],
    "name": lambda r: r["name"],
    "type": lambda r: r["type"],
    "status": lambda r: r["status"],
    "audience": lambda r: r["audience"],
    "tier": lambda r: r["tier"] or "",
    "stage": lambda r: r["stage"] or "",
    "onboarding_status": lambda r: r["onboarding_status"] or "",
    "subscriptions": lambda r: _joined(r["subscriptions"], lambda s: f"{s['product']}/{s['plan']} ({s['state']})"),
    "applications": lambda r: _joined(r["applications"],
                                      lambda a: f"{a['name']} ({a['environment']}, {a['state']})"),
    "credentials": lambda r: len(r["credentials"]),
    "oldest_credential_days": lambda r: max((c["age_days"] for c in r["credentials"]), default=""),
    "longest_unused_days": lambda r: max((c["unused_days"] for c in r["credentials"]), default=""),
    "agreements_signed": lambda r: _joined(r["agreements_signed"],
                                           lambda a: f"{a['slug']} v{a['accepted_version_number']}"),
    "agreements_missing": lambda r: _joined(r["agreements_missing"],
                                            lambda a: f"{a['slug']} v{a['version_number']} ({a['state']})"),
    "first_call_at": lambda r: _when(r["first_call_at"]),
    "last_call_at": lambda r: _when(r["last_call_at"]),
    "calls_30d": lambda r: r["calls_30d"],
    "flags": lambda r: _joined(r["flags"], lambda f: str(f["flag"])),
    "flag_details": lambda r: _joined(r["flags"], lambda f: f"{f['flag']}: {f['detail']}"),
}


def _cell(value: Any) -> Any:
    # A cell starting with = + - @ is a formula to a spreadsheet: keep partner-chosen names inert.
    if isinstance(value, str) and value[:1] in {"=", "+", "-", "@", "\t", "\r"}:
        return "'" + value
    return value


def to_csv(rows: list[Row]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_cell(show(row)) for show in COLUMNS.values()])
    return out.getvalue()


def to_json(rows: list[Row]) -> str:
    # pydantic's serializer (in Rust) writes UUIDs, times and enums exactly as the API's models do.
    return to_json_bytes(rows, indent=2).decode() + "\n"
