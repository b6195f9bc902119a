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
* Several rows with the same partner give it several keys, subscriptions and signed
  agreements. Rows after the first may leave the partner's cells empty; filled ones must agree.
* A key goes into the named application of the partner (default
  `Imported keys (<environment>)`), created in `api_key_environment` (default:
  sandbox for an `acc_test_` key, otherwise production). Keys are stored only as
  their keyed hash (`apps.service.import_credential`) and keep working unchanged;
  a key already stored for that application is skipped, so importing the same file
  twice changes nothing. Keys are never printed.
* `product`, `plan` (slugs), `subscription_state` (default active) and `subscribed_at`
  (the original date, default now) bring over an existing subscription with its
  history. It is imported as it is, even above the partner's tier or audience (the
  integration audit then flags it). A live subscription to the same plan is skipped; to
  another plan of the product it is a problem.
* `agreement` (slug), `agreement_version` (number), `accepted_at` (the original date),
  `accepted_by` (email or name) and `accepted_ip` record a signed agreement as imported
  evidence (`agreements.service.record_acceptance`, source `import`); one already
  recorded for that version is skipped.
* `registered_at` is when a new partner originally signed up (default now): the
  onboarding path and the funnel's time-to-first-call start there. It is ignored for a
  partner that already exists in Accord.
* Dates are ISO 8601 (`2024-05-01` or `2024-05-01T09:30:00+02:00`; UTC when no zone is given).
* Last, every imported partner is placed on the onboarding path at the stage its facts
  imply (`onboarding.service.refresh`); `placements` says where each one landed, which
  is what a dry run (the same work, rolled back) shows.

Everything is validated before anything is written, every problem named by row
(the spreadsheet's row number: the header is row 1) and column, e.g.
`row 7, contact_email: …`; then all rows are written in one transaction.
"""
from __future__ import annotations

import csv
import io
import re
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    StringConstraints,
    ValidationError,
    field_validator,
)
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.agreements import service as agreements
from accord.agreements.models import AcceptanceSource, Agreement, AgreementVersion
from accord.apps import service as apps
from accord.apps.models import Application, Credential, Environment
from accord.apps.schemas import ApplicationCreate
from accord.audit import service as audit
from accord.auth.actor import Actor
from accord.core.clock import utcnow
from accord.core.config import Settings
from accord.core.errors import ProblemError
from accord.core.schemas import LongText, Name, Slug
from accord.core.security import keyed_hash, last_four
from accord.customfields import service as customfields
from accord.customfields.models import FieldDefinition, FieldTarget, FieldType
from accord.onboarding import service as onboarding
from accord.onboarding.models import PartnerOnboarding
from accord.partners import service as partners
from accord.partners.models import Audience, Partner, PartnerStatus, PartnerType, Tier
from accord.partners.schemas import ContactEmail, ContactName, Country, Phone, PartnerCreate, PartnerUpdate, Website
from accord.program.apply_partners import move_partner_status
from accord.program.changes import CREATE, UPDATE, Change, FieldChange, diff
from accord.program.context import Context
from accord.program.document import UniqueKeyLoader
from accord.plans.models import Plan
from accord.products.models import Product
from accord.program.errors import ProgramError
from accord.subscriptions import service as subscriptions
from accord.subscriptions.models import Subscription, SubscriptionChange, SubscriptionState

PARTNER_COLUMNS = ("name", "slug", "type", "tier", "audience", "status", "contact_name", "contact_email",
                   "contact_phone", "website", "country", "notes")
KEY_COLUMNS = ("api_key", "api_key_environment", "api_key_name", "application")
SUBSCRIPTION_COLUMNS = ("product", "plan", "subscription_state", "subscribed_at")
AGREEMENT_COLUMNS = ("agreement", "agreement_version", "accepted_at", "accepted_by", "accepted_ip")
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
    registered_at: datetime | None = None
    custom_fields: dict[str, Any] = {}
    api_key: str | None = None
    api_key_environment: Environment | None = None
    api_key_name: Name | None = None
    application: Name | None = None
    product: Slug | None = None
    plan: Slug | None = None
    subscription_state: SubscriptionState | None = None
    subscribed_at: datetime | None = None
    agreement: Slug | None = None
    agreement_version: int | None = Field(None, ge=1)
    accepted_at: datetime | None = None
    accepted_by: Annotated[str, StringConstraints(max_length=320)] | None = None
    accepted_ip: IPvAnyAddress | None = None

    @field_validator("registered_at", "subscribed_at", "accepted_at", mode="before")
    @classmethod
    def _date(cls, value: Any) -> Any:
        # YAML reads `2024-05-01` as a date; a spreadsheet cell gives the same as text.
        if isinstance(value, date) and not isinstance(value, datetime):
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        return value

    @field_validator("registered_at", "subscribed_at", "accepted_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if value > utcnow():
            raise ValueError("is in the future")
        return value

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
    invalid: frozenset[str] = frozenset()  # cells already reported as bad (and left out of `row`)


@dataclass
class PartnerImport:
    """The rows of one partner: its fields (merged) and its keys."""

    slug: str
    first: str  # where the partner first appears
    fields: dict[str, Any] = field(default_factory=dict)
    custom_fields: dict[str, Any] = field(default_factory=dict)
    registered_at: datetime | None = None
    keys: list[Record] = field(default_factory=list)
    subscriptions: list[Record] = field(default_factory=list)
    acceptances: list[Record] = field(default_factory=list)


@dataclass(frozen=True)
class Placement:
    """Where an imported partner landed on the onboarding path."""

    slug: str
    stage: str
    status: str
    since: datetime


@dataclass
class ImportResult:
    changes: list[Change] = field(default_factory=list)
    partners_created: int = 0
    partners_updated: int = 0
    partners_unchanged: int = 0
    keys_imported: int = 0
    keys_already_stored: int = 0
    subscriptions_imported: int = 0
    subscriptions_already_stored: int = 0
    acceptances_imported: int = 0
    acceptances_already_stored: int = 0
    placements: list[Placement] = field(default_factory=list)


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
    known = {*PARTNER_COLUMNS, "registered_at", *KEY_COLUMNS, *SUBSCRIPTION_COLUMNS, *AGREEMENT_COLUMNS}
    problems = [("header", f"unknown column {h!r}") for h in header
                if h not in known and not h.startswith(CUSTOM_FIELD_PREFIX)]
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
        dropped: set[str] = set()
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
                dropped |= bad & set(cells)
                cells = {k: v for k, v in cells.items() if k not in bad}
        if row is None:
            continue
        if row.name is None and row.slug is None:
            if not dropped & {"name", "slug"}:  # else the bad cell is already reported
                problems.append((f"{where}, name", "give the partner's name or slug"))
            continue
        rows.append(Record(where, row, frozenset(dropped)))
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
            if row.registered_at is not None:
                if group.registered_at not in (None, row.registered_at):
                    self.add(record.where, "registered_at", f"differs from {group.first} of the same partner "
                                                            f"({group.registered_at.isoformat()})")
                group.registered_at = group.registered_at or row.registered_at
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
            self._collect(record, group, SUBSCRIPTION_COLUMNS, ("product", "plan"), group.subscriptions)
            self._collect(record, group, AGREEMENT_COLUMNS, ("agreement", "agreement_version", "accepted_at"),
                          group.acceptances)
        return list(groups.values())

    def _collect(self, record: Record, group: PartnerImport, columns: tuple[str, ...], required: tuple[str, ...],
                 into: list[Record]) -> None:
        """A row's subscription (or signed agreement): all of `required` given, or none of `columns`."""
        if all(getattr(record.row, c) is None for c in columns):
            return
        missing = [c for c in required if getattr(record.row, c) is None]
        given = ", ".join(c for c in columns if getattr(record.row, c) is not None)
        for column in missing:
            if column not in record.invalid:  # a bad cell is reported once, as bad, not also as missing
                self.add(record.where, column, f"is required with {given}")
        if not missing:
            into.append(record)

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
            await self._check_subscriptions(group, partner)
            await self._check_acceptances(group)

    async def _check_subscriptions(self, group: PartnerImport, partner: Partner | None) -> None:
        planned: dict[str, str] = {}
        for record in group.subscriptions:
            row = record.row
            plan = await self._plan(row.product or "", row.plan or "")
            if plan is None:
                product = await self.session.scalar(select(Product.id).where(Product.slug == row.product))
                column, reason = ("product", f"no product {row.product!r}") if product is None \
                    else ("plan", f"no plan {row.plan!r} in product {row.product!r}")
                self.add(record.where, column, reason)
                continue
            if row.product in planned:
                self.add(record.where, "product",
                         f"a subscription to {row.product!r} is already in {planned[row.product]}")
                continue
            planned[row.product or ""] = record.where
            if partner is not None:
                live = await self.session.scalar(select(Subscription).where(
                    Subscription.partner_id == partner.id, Subscription.product_id == plan.product_id,
                    Subscription.state.in_(subscriptions.LIVE)))
                if live is not None and live.plan_id != plan.id:
                    self.add(record.where, "plan", f"the partner already has {'an' if live.state == 'active' else 'a'} {live.state} subscription to another "
                                                   f"plan of {row.product!r}")

    async def _plan(self, product: str, plan: str) -> Plan | None:
        return await self.session.scalar(select(Plan).join(Product, Product.id == Plan.product_id)
                                         .where(Product.slug == product, Plan.slug == plan))

    async def _check_acceptances(self, group: PartnerImport) -> None:
        for record in group.acceptances:
            row = record.row
            version = await _version(self.session, row.agreement or "", row.agreement_version or 0)
            if version is None:
                found = await self.session.scalar(select(Agreement.id).where(Agreement.slug == row.agreement))
                column, reason = ("agreement", f"no agreement {row.agreement!r}") if found is None \
                    else ("agreement_version", f"{row.agreement!r} has no version {row.agreement_version}")
                self.add(record.where, column, reason)
            elif version.published_at is None:
                self.add(record.where, "agreement_version", "is a draft; only a published version can be accepted")
            elif row.accepted_at is not None and row.accepted_at < version.published_at:
                self.add(record.where, "accepted_at", agreements.before_publication(version))

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
        self.partner_ids: list[uuid.UUID] = []

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
            if group.registered_at is not None:
                partner.created_at = group.registered_at  # the original sign-up: where its onboarding path starts
            self.ctx.record(CREATE, "partner", group.slug)
            self.result.partners_created += 1
        else:
            await self._update(partner, group)
        for record in group.keys:
            await self.key(partner, record)
        for record in group.subscriptions:
            await self.subscription(partner, record)
        for record in group.acceptances:
            await self.acceptance(partner, record)
        self.partner_ids.append(partner.id)
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


    async def subscription(self, partner: Partner, record: Record) -> None:
        """An existing subscription with its original date, as it is (no eligibility rules: it exists)."""
        session, actor, row = self.ctx.session, self.ctx.actor, record.row
        plan = await session.scalar(select(Plan).join(Product, Product.id == Plan.product_id)
                                    .where(Product.slug == row.product, Plan.slug == row.plan))
        live = await session.scalar(select(Subscription).where(
            Subscription.partner_id == partner.id, Subscription.plan_id == plan.id,
            Subscription.state.in_(subscriptions.LIVE)))
        if live is not None:
            self.result.subscriptions_already_stored += 1
            return
        state = row.subscription_state or SubscriptionState.active
        since = row.subscribed_at or utcnow()
        subscription = Subscription(partner_id=partner.id, product_id=plan.product_id, plan_id=plan.id, state=state,
                                    created_at=since,
                                    activated_at=since if state != SubscriptionState.pending else None,
                                    cancelled_at=since if state == SubscriptionState.cancelled else None)
        session.add(subscription)
        await session.flush()
        session.add(SubscriptionChange(subscription_id=subscription.id, to_state=state, to_plan_id=plan.id,
                                       actor=actor.label[:200], reason="imported", created_at=since))
        await audit.record(session, actor, "subscription.created", subscription, partner_id=partner.id)
        self.ctx.record(CREATE, "subscription", f"{partner.slug}/{row.product}/{row.plan}",
                        note=f"{state}, since {since:%Y-%m-%d}")
        self.result.subscriptions_imported += 1

    async def acceptance(self, partner: Partner, record: Record) -> None:
        row = record.row
        version = await _version(self.ctx.session, row.agreement or "", row.agreement_version or 0)
        with self.ctx.at(record.where, {"version_id": "agreement_version"}):
            _, created = await agreements.record_acceptance(
                self.ctx.session, self.ctx.actor, partner, version, source=AcceptanceSource.imported,
                accepted_at=row.accepted_at, accepted_by=row.accepted_by or "",
                ip_address=str(row.accepted_ip) if row.accepted_ip else None, note="imported")
        if not created:
            self.result.acceptances_already_stored += 1
            return
        self.ctx.record(CREATE, "acceptance", f"{partner.slug}/{row.agreement} v{row.agreement_version}",
                        note=f"accepted {row.accepted_at:%Y-%m-%d}")
        self.result.acceptances_imported += 1

    async def place(self) -> None:
        """Put every imported partner at the stage its facts imply; note where each landed."""
        session = self.ctx.session
        await onboarding.refresh(session, self.partner_ids, settings=self.ctx.settings)
        rows = await session.execute(
            select(Partner.slug, PartnerOnboarding.stage_key, PartnerOnboarding.status,
                   PartnerOnboarding.stage_entered_at)
            .join(PartnerOnboarding, PartnerOnboarding.partner_id == Partner.id)
            .where(Partner.id.in_(self.partner_ids)).order_by(Partner.slug))
        self.result.placements = [Placement(slug, stage, str(status), since) for slug, stage, status, since in rows]


async def _version(session: AsyncSession, agreement: str, number: int) -> AgreementVersion | None:
    return await session.scalar(select(AgreementVersion).join(Agreement, Agreement.id == AgreementVersion.agreement_id)
                                .where(Agreement.slug == agreement, AgreementVersion.number == number))


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
    await writer.place()
    await session.flush()
    return result

