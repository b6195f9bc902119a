"""`accord partners import`: bring existing partners and their API keys over from spreadsheets.

The file is CSV (one header row) or YAML (a list of records with the same keys, or
a mapping with such a list under `partners`). Columns:

    name, slug, type, tier, audience, status, contact_name, contact_email,
    contact_phone, website, country, notes, cf_<custom field key>...,
    api_key, api_key_environment, api_key_name, application

* `slug` defaults to one made from `name`; a partner whose slug exists is
  updated (with the cells that are filled in), never duplicated.
* `tier` is a tier's slug or name; `type`, `audience` and `status` take the
  values of the admin API (a new partner defaults to developer / public / pending).
* Several rows with the same partner give it several keys. Rows after the first
  may leave the partner's cells empty; filled ones must agree.
* A key goes into the named application of the partner (default
  `Imported keys (<environment>)`), created in `api_key_environment` (default:
  sandbox for an `acc_test_` key, otherwise production). Keys are stored only as
  their keyed hash (`apps.service.import_credential`) and keep working unchanged;
  a key already stored for that application is skipped, so importing the same file
  twice changes nothing. Keys are never printed.

Everything is validated before anything is written, every problem named by row
(the spreadsheet's row number: the header is row 1) and column, e.g.
`row 7, contact_email: …`; then all rows are written in one transaction.
"""
from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.apps import service as apps
from accord.apps.models import Application, Credential, Environment
from accord.apps.schemas import ApplicationCreate
from accord.auth.actor import Actor
from accord.core.config import Settings
from accord.core.errors import ProblemError
from accord.core.schemas import LongText, Name, Slug
from accord.core.security import keyed_hash, last_four
from accord.customfields import service as customfields
from accord.customfields.models import FieldDefinition, FieldTarget, FieldType
from accord.partners import service as partners
from accord.partners.models import Audience, Partner, PartnerStatus, PartnerType, Tier
from accord.partners.schemas import ContactEmail, ContactName, Country, Phone, PartnerCreate, PartnerUpdate, Website
from accord.program.apply_partners import move_partner_status
from accord.program.changes import CREATE, UPDATE, Change, FieldChange, diff
from accord.program.context import Context
from accord.program.document import UniqueKeyLoader
from accord.program.errors import ProgramError

PARTNER_COLUMNS = ("name", "slug", "type", "tier", "audience", "status", "contact_name", "contact_email",
                   "contact_phone", "website", "country", "notes")
KEY_COLUMNS = ("api_key", "api_key_environment", "api_key_name", "application")
CUSTOM_FIELD_PREFIX = "cf_"
DEFAULT_KEY_NAME = "imported"
_TEST_PREFIX = apps.SECRET_PREFIXES[Environment.sandbox]


def slugify(name: str) -> str:
    """`Acme Analytics, Inc.` → `acme-analytics-inc`."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:100].strip("-") or "partner"


def default_application(environment: Environment) -> str:
    return f"Imported keys ({environment})"


class ImportRow(BaseModel):
    """One record, cells already stripped (an empty cell is None)."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    slug: Slug | None = None
    type: PartnerType | None = None
    tier: str | None = None
    audience: Audience | None = None
    status: PartnerStatus | None = None
    contact_name: ContactName | None = None
    contact_email: ContactEmail | None = None
    contact_phone: Phone | None = None
    website: Website | None = None
    country: Country | None = None
    notes: LongText | None = None
    custom_fields: dict[str, Any] = {}
    api_key: str | None = None
    api_key_environment: Environment | None = None
    api_key_name: Name | None = None
    application: Name | None = None

    @field_validator("api_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        # The same rule as `import_credential`, checked up front so every bad row is listed.
        if value is not None and (not 16 <= len(value) <= 200 or not value.isascii() or not value.isprintable()
                                  or " " in value):
            raise ValueError("must be 16 to 200 printable ASCII characters without spaces")
        return value

    @property
    def partner_slug(self) -> str:
        return self.slug or slugify(self.name or "")

    @property
    def key_environment(self) -> Environment:
        if self.api_key_environment is not None:
            return self.api_key_environment
        return Environment.sandbox if (self.api_key or "").startswith(_TEST_PREFIX) else Environment.production


@dataclass
class Record:
    where: str  # `row 7` or `partners[6]`
    row: ImportRow


@dataclass
class PartnerImport:
    """The rows of one partner: its fields (merged) and its keys."""

    slug: str
    first: str  # where the partner first appears
    fields: dict[str, Any] = field(default_factory=dict)
    custom_fields: dict[str, Any] = field(default_factory=dict)
    keys: list[Record] = field(default_factory=list)


@dataclass
class ImportResult:
    changes: list[Change] = field(default_factory=list)
    partners_created: int = 0
    partners_updated: int = 0
    partners_unchanged: int = 0
    keys_imported: int = 0
    keys_already_stored: int = 0


# --- reading ------------------------------------------------------------------------------

def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip() or None
    return value


def _nul_cells(where: str, cells: dict[str, Any]) -> list[tuple[str, str]]:
    """Cells no database can store (PostgreSQL refuses NUL characters)."""
    return [(f"{where}, {column}", "contains a NUL character") for column, value in cells.items()
            if isinstance(value, str) and "\x00" in value]


def read_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, raw record) for each record of a CSV or YAML file; ProgramError if it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # spreadsheets often write a byte-order mark
    except (OSError, UnicodeDecodeError) as exc:
        raise ProgramError([("", f"cannot read the file: {exc}")]) from exc
    if path.suffix.lower() in {".yaml", ".yml"}:
        return _yaml_records(text)
    if path.suffix.lower() == ".csv":
        return _csv_records(text)
    raise ProgramError([("", "the file must be .csv, .yaml or .yml")])


def _csv_records(text: str) -> list[tuple[str, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    problems = [("header", f"unknown column {h!r}") for h in header
                if h not in PARTNER_COLUMNS and h not in KEY_COLUMNS and not h.startswith(CUSTOM_FIELD_PREFIX)]
    if not header:
        problems.append(("header", "the file has no header row"))
    if problems:
        raise ProgramError(problems)
    records = []
    for index, raw in enumerate(reader):
        where = f"row {index + 2}"
        if None in raw:
            raise ProgramError([(where, "has more cells than the header has columns")])
        cells = {k.strip(): _clean(v) for k, v in raw.items()}
        if any(v is not None for v in cells.values()):
            records.append((where, cells))
    return records


def _yaml_records(text: str) -> list[tuple[str, dict[str, Any]]]:
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ProgramError([("", f"not valid YAML: {exc}")]) from exc
    if isinstance(data, dict) and set(data) == {"partners"}:
        data = data["partners"]
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ProgramError([("", "a YAML import is a list of partner records (or `partners:` with one)")])
    return [(f"partners[{i}]", {str(k): _clean(v) for k, v in item.items()}) for i, item in enumerate(data)]


def _split_custom_fields(raw: dict[str, Any]) -> dict[str, Any]:
    values = dict(raw.pop("custom_fields", None) or {})
    for column in [c for c in raw if c.startswith(CUSTOM_FIELD_PREFIX)]:
        value = raw.pop(column)
        if value is not None:
            values[column.removeprefix(CUSTOM_FIELD_PREFIX)] = value
    raw["custom_fields"] = values
    return raw


def _column(field_name: str) -> str:
    return f"{CUSTOM_FIELD_PREFIX}{field_name.removeprefix('custom_fields.')}" \
        if field_name.startswith("custom_fields.") else field_name


def parse_records(records: list[tuple[str, dict[str, Any]]]) -> tuple[list[Record], list[tuple[str, str]]]:
    """Rows validated cell by cell. A row with bad cells is still returned without them, so that its
    other cells get the database checks too and every problem of the file is listed at once."""
    rows, problems = [], []
    for where, raw in records:
        if nul := _nul_cells(where, raw):
            problems.extend(nul)
            continue
        cells = _split_custom_fields(dict(raw))
        row: ImportRow | None = None
        while row is None:
            try:
                row = ImportRow.model_validate(cells)
            except ValidationError as exc:
                bad = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
                for error in exc.errors(include_url=False):
                    column = _column(".".join(str(p) for p in error["loc"]))
                    reason = "unknown column" if error["type"] == "extra_forbidden" else \
                        error["msg"].removeprefix("Value error, ")
                    problems.append((f"{where}, {column}", reason))
                if not bad & set(cells):
                    break
                cells = {k: v for k, v in cells.items() if k not in bad}
        if row is None:
            continue
        if row.name is None and row.slug is None:
            problems.append((f"{where}, name", "give the partner's name or slug"))
            continue
        rows.append(Record(where, row))
    return rows, problems


# --- validating against the database ----------------------------------------------------------

def _coerce_custom_value(definition: FieldDefinition | None, value: Any) -> Any:
    """Spreadsheet cells are text: read numbers and booleans for fields of those types."""
    if definition is None or not isinstance(value, str):
        return value
    if definition.type == FieldType.number:
        try:
            return int(value) if re.fullmatch(r"[+-]?\d+", value) else float(value)
        except ValueError:
            return value
    if definition.type == FieldType.boolean:
        return {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(value.lower(), value)
    return value


class _Validator:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings
        self.problems: list[tuple[str, str]] = []
        # (partner slug, application name) → (environment, where first seen), across rows.
        self.app_environments: dict[tuple[str, str], tuple[Environment, str]] = {}

    def add(self, where: str, column: str, reason: str) -> None:
        self.problems.append((f"{where}, {column}", reason))

    async def group(self, records: list[Record]) -> list[PartnerImport]:
        tiers = list(await self.session.scalars(select(Tier)))
        tier_by_ref = {t.slug: t.slug for t in tiers} | {t.name.lower(): t.slug for t in tiers}
        definitions = {d.key: d for d in await customfields.definitions_for(self.session, FieldTarget.partner)}
        groups: dict[str, PartnerImport] = {}
        for record in records:
            row = record.row
            group = groups.setdefault(row.partner_slug, PartnerImport(row.partner_slug, record.where))
            values = row.model_dump(mode="json", include=set(PARTNER_COLUMNS) - {"slug"}, exclude_none=True)
            if "tier" in values:
                tier = tier_by_ref.get(values["tier"]) or tier_by_ref.get(values["tier"].lower())
                if tier is None:
                    self.add(record.where, "tier", f"no tier with slug or name {values['tier']!r}")
                values["tier"] = tier
            for name, value in values.items():
                if name in group.fields and group.fields[name] != value:
                    self.add(record.where, name, f"differs from {group.first} of the same partner "
                                                 f"({group.fields[name]!r})")
                group.fields.setdefault(name, value)
            for key, value in row.custom_fields.items():
                value = _coerce_custom_value(definitions.get(key), value)
                if key in group.custom_fields and group.custom_fields[key] != value:
                    self.add(record.where, f"{CUSTOM_FIELD_PREFIX}{key}",
                             f"differs from {group.first} of the same partner")
                group.custom_fields.setdefault(key, value)
            if row.api_key is not None:
                group.keys.append(record)
            elif any(getattr(row, c) is not None for c in KEY_COLUMNS):
                self.add(record.where, "api_key", "is empty, but the row has other key columns")
        return list(groups.values())

    async def check(self, groups: list[PartnerImport]) -> None:
        existing = {p.slug: p for p in await self.session.scalars(
            select(Partner).where(Partner.slug.in_([g.slug for g in groups])))}
        seen_keys: dict[str, str] = {}
        for group in groups:
            partner = existing.get(group.slug)
            if partner is None and "name" not in group.fields:
                self.add(group.first, "name", f"is required: there is no partner {group.slug!r} yet")
            try:
                await customfields.validate_values(self.session, FieldTarget.partner, group.custom_fields,
                                                   existing=partner.custom_fields if partner else None)
            except ProblemError as exc:
                for error in exc.errors:
                    self.add(group.first, _column(error["field"]), error["reason"])
            for record in group.keys:
                await self._check_key(record, partner, seen_keys)

    async def _check_key(self, record: Record, partner: Partner | None, seen: dict[str, str]) -> None:
        row = record.row
        secret = row.api_key or ""
        environment = row.key_environment
        for other, prefix in apps.SECRET_PREFIXES.items():
            if other != environment and secret.startswith(prefix):
                self.add(record.where, "api_key", f"is a {other} key, but api_key_environment is {environment}")
        digest = keyed_hash(secret, self.settings.secret_key)
        if digest in seen:
            self.add(record.where, "api_key", f"the same key is in {seen[digest]}")
            return
        seen[digest] = record.where
        application = row.application or default_application(environment)
        planned = self.app_environments.setdefault((row.partner_slug, application), (environment, record.where))
        if planned[0] != environment:
            self.add(record.where, "application", f"{application!r} gets a {planned[0]} key in {planned[1]}; an "
                                                  f"application holds keys of one environment")
        stored = (await self.session.execute(
            select(Application, Partner.slug).join(Credential, Credential.application_id == Application.id)
            .join(Partner, Partner.id == Application.partner_id).where(Credential.key_hash == digest))).first()
        if stored is not None and (stored[1] != row.partner_slug or stored[0].name != application):
            self.add(record.where, "api_key", "this key is already stored for another application")
        if partner is not None:
            app = await self.session.scalar(select(Application).where(Application.partner_id == partner.id,
                                                                      Application.name == application))
            if app is not None and app.environment != environment:
                self.add(record.where, "application", f"{application!r} is a {app.environment} application; "
                                                      f"this key is for {environment}")


# --- writing -----------------------------------------------------------------------------------

class _Writer:
    def __init__(self, ctx: Context, result: ImportResult) -> None:
        self.ctx = ctx
        self.result = result

    async def partner(self, group: PartnerImport) -> None:
        session, actor = self.ctx.session, self.ctx.actor
        fields = group.fields
        partner = await partners.get_partner_by_slug(session, group.slug)
        status = fields.get("status")
        if partner is None:
            initial = PartnerStatus.active if status in {PartnerStatus.active, PartnerStatus.suspended} \
                else PartnerStatus.pending
            data = {k: v for k, v in fields.items() if k != "status"}
            with self.ctx.at(group.first):
                partner = await partners.create_partner(session, actor, PartnerCreate(
                    slug=group.slug, status=initial, custom_fields=group.custom_fields, **data))
            self.ctx.record(CREATE, "partner", group.slug)
            self.result.partners_created += 1
        else:
            await self._update(partner, group)
        for record in group.keys:
            await self.key(partner, record)
        # Last, so that a partner imported as suspended or closed still gets its keys.
        if status is not None:
            await move_partner_status(self.ctx, partner, status, f"{group.first}, status")

    async def _update(self, partner: Partner, group: PartnerImport) -> None:
        session, actor = self.ctx.session, self.ctx.actor
        tier = await session.get(Tier, partner.tier_id) if partner.tier_id else None
        current = {name: getattr(partner, name) for name in group.fields if name not in {"tier"}}
        current["tier"] = tier.slug if tier else None
        changes = diff(current, group.fields)
        merged = {**(partner.custom_fields or {}), **group.custom_fields}
        if merged != (partner.custom_fields or {}):
            changes.append(FieldChange("custom_fields", partner.custom_fields, merged))
        update = {c.name: c.new for c in changes if c.name not in {"tier", "status", "custom_fields"}}
        if any(c.name == "custom_fields" for c in changes):
            update["custom_fields"] = group.custom_fields
        with self.ctx.at(group.first):
            if update:
                await partners.update_partner(session, actor, partner.id, PartnerUpdate(**update))
            if any(c.name == "tier" for c in changes):
                await partners.change_tier(session, actor, partner.id, group.fields["tier"])
        if changes:
            self.ctx.record(UPDATE, "partner", group.slug, changes)
            self.result.partners_updated += 1
        else:
            self.result.partners_unchanged += 1

    async def key(self, partner: Partner, record: Record) -> None:
        session, actor = self.ctx.session, self.ctx.actor
        row = record.row
        environment = row.key_environment
        name = row.application or default_application(environment)
        app = await session.scalar(select(Application).where(Application.partner_id == partner.id,
                                                             Application.name == name))
        with self.ctx.at(record.where, {"name": "application"}):
            if app is None:
                app = await apps.create_application(session, actor, partner, ApplicationCreate(
                    name=name, environment=environment), by_staff=True)
                self.ctx.record(CREATE, "application", f"{partner.slug}/{name}")
        digest = keyed_hash(row.api_key or "", self.ctx.settings.secret_key)
        if await session.scalar(select(func.count()).select_from(Credential).where(
                Credential.application_id == app.id, Credential.key_hash == digest)):
            self.result.keys_already_stored += 1
            return
        with self.ctx.at(record.where, {"secret": "api_key", "name": "api_key_name"}):
            await apps.import_credential(session, actor, app, row.api_key or "", row.api_key_name or DEFAULT_KEY_NAME,
                                         self.ctx.settings.secret_key)
        # Only the last four characters, as everywhere a stored key is shown.
        self.ctx.record(CREATE, "key", f"{partner.slug}/{name}/{row.api_key_name or DEFAULT_KEY_NAME}",
                        note=f"…{last_four(row.api_key or '')}")
        self.result.keys_imported += 1


def _locate(where: str, field_name: str) -> str:
    """`row 7` + a service's `contact_email` → `row 7, contact_email` (custom fields as their `cf_` column)."""
    return f"{where}, {_column(field_name)}" if field_name else where


def _record_order(problem: tuple[str, str]) -> int:
    """Problems by record (`row 7`, `partners[6]`), in the stable order they were found within one."""
    number = re.search(r"\d+", problem[0])
    return int(number.group()) if number else -1


async def import_partners(session: AsyncSession, settings: Settings, records: list[tuple[str, dict[str, Any]]], *,
                          actor: Actor, on_partner: Callable[[int, int], None] | None = None) -> ImportResult:
    """Validate every record, then import them; raises ProgramError (nothing written) on any problem.

    `on_partner(done, total)` is called after each partner, for a progress bar. Never commits.
    """
    rows, problems = parse_records(records)
    validator = _Validator(session, settings)
    validator.problems.extend(problems)
    groups = await validator.group(rows)
    await validator.check(groups)
    if validator.problems:
        raise ProgramError(sorted(validator.problems, key=_record_order))
    ctx = Context(session, settings, actor, prune=False, join=_locate)
    result = ImportResult(changes=ctx.result.changes)
    writer = _Writer(ctx, result)
    for done, group in enumerate(groups, start=1):
        await writer.partner(group)
        if on_partner is not None:
            on_partner(done, len(groups))
    await session.flush()
    return result

