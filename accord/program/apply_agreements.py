"""Applying and exporting the program's agreements: versions and requirements.

Agreements are found by slug, versions by number, requirements by (scope, target).
A published version is evidence partners accepted: the file must say what the
database has (a difference is an error, not an update); a draft is updated, and
published when the file no longer calls it a draft. With `--prune`, drafts and
requirements the file does not have are deleted; an agreement the file drops is
deleted when it was never published, else its requirements and draft go (it then
binds nobody, and its versions and acceptances stay for the record).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from accord.agreements import service as agreements
from accord.agreements.models import Agreement, AgreementRequirement, AgreementVersion
from accord.partners.models import Tier
from accord.products.models import Product
from accord.program.changes import CREATE, DELETE, REMOVE, UPDATE, Change, diff
from accord.program.context import Context
from accord.program.errors import ProgramError
from accord.program.spec import AgreementRequirementSpec, AgreementSpec, AgreementVersionSpec, ProgramSpec

_VERSION_FIELDS = ("body", "changes_summary", "material", "grace_days", "effective_at")


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


async def apply_agreements(ctx: Context, spec: ProgramSpec) -> None:
    current = {a.slug: a for a in await ctx.session.scalars(select(Agreement))}
    for i, item in enumerate(spec.agreements):
        path = f"agreements[{i}]"
        row = current.get(item.slug)
        if row is None:
            with ctx.at(path):
                row = await agreements.create_agreement(ctx.session, ctx.actor, slug=item.slug, title=item.title,
                                                        description=item.description)
            ctx.record(CREATE, "agreement", item.slug)
        else:
            fields = diff({"title": row.title, "description": row.description},
                          {"title": item.title, "description": item.description})
            if fields:
                with ctx.at(path):
                    await agreements.update_agreement(ctx.session, ctx.actor, row, {f.name: f.new for f in fields})
                ctx.record(UPDATE, "agreement", item.slug, fields)
        await ctx.session.flush()
        await _apply_versions(ctx, path, row, item)
        await _apply_requirements(ctx, path, row, item)


async def _apply_versions(ctx: Context, path: str, agreement: Agreement, item: AgreementSpec) -> None:
    existing = {v.number: v for v in await agreements.versions(ctx.session, agreement.id)}
    for j, version_spec in enumerate(item.versions):
        where = f"{path}.versions[{j}]"
        key = f"{item.slug} v{version_spec.number}"
        row = existing.get(version_spec.number)
        desired = version_spec.model_dump(include=set(_VERSION_FIELDS))
        if row is None:
            with ctx.at(where):
                row = await agreements.create_version(ctx.session, ctx.actor, agreement, **desired)
                if not version_spec.draft:
                    await agreements.publish_version(ctx.session, ctx.actor, row, at=version_spec.published_at)
            ctx.record(CREATE, "agreement version", key, note="draft" if version_spec.draft else "published")
            continue
        if row.published_at is not None:
            _check_unchanged(where, row, version_spec)
            continue
        fields = diff({name: getattr(row, name) for name in _VERSION_FIELDS}, desired)
        if fields:
            with ctx.at(where):
                await agreements.update_version(ctx.session, ctx.actor, row, {f.name: f.new for f in fields})
            ctx.record(UPDATE, "agreement version", key, fields)
        if not version_spec.draft:
            with ctx.at(where):
                await agreements.publish_version(ctx.session, ctx.actor, row, at=version_spec.published_at)
            ctx.record(UPDATE, "agreement version", key, note="published")
    for number, row in sorted(existing.items()):
        if number > len(item.versions):
            if row.published_at is not None:
                raise ProgramError([(f"{path}.versions", f"version {number} is published and stays for the "
                                                         "record; keep it in the file")])
            await ctx.remove(f"{path}.versions", Change(DELETE, "agreement version", f"{item.slug} v{number}"),
                             lambda row=row: agreements.delete_version(ctx.session, ctx.actor, row))


def _check_unchanged(where: str, row: AgreementVersion, version_spec: AgreementVersionSpec) -> None:
    problems = []
    wanted: dict[str, Any] = version_spec.model_dump(include=set(_VERSION_FIELDS) - {"effective_at"})
    if version_spec.effective_at is not None:
        wanted["effective_at"] = version_spec.effective_at
    if version_spec.published_at is not None:
        wanted["published_at"] = version_spec.published_at
    for name, value in wanted.items():
        if getattr(row, name) != value:
            problems.append((f"{where}.{name}", f"version {row.number} is published and cannot change; "
                                                f"add version {row.number + 1} instead"))
    if version_spec.draft:
        problems.append((f"{where}.draft", f"version {row.number} is already published"))
    if problems:
        raise ProgramError(problems)


async def _target(ctx: Context, where: str, requirement: AgreementRequirementSpec) -> dict[str, Any]:
    """The requirement's target as the service takes it (ids for products and tiers)."""
    if requirement.product is not None:
        product_id = await ctx.session.scalar(select(Product.id).where(Product.slug == requirement.product))
        if product_id is None:
            raise ProgramError([(f"{where}.product", f"no product {requirement.product!r}")])
        return {"product_id": product_id}
    if requirement.tier is not None:
        tier_id = await ctx.session.scalar(select(Tier.id).where(Tier.slug == requirement.tier))
        if tier_id is None:
            raise ProgramError([(f"{where}.tier", f"no tier {requirement.tier!r}")])
        return {"tier_id": tier_id}
    if requirement.stage is not None:
        return {"stage_key": requirement.stage}
    if requirement.partner_type is not None:
        return {"partner_type": requirement.partner_type.value}
    return {}


async def _requirement_keys(session: Any, agreement_id: Any) -> dict[tuple[str, str], AgreementRequirement]:
    """The agreement's requirements by (scope, target), targets named as in the file (slugs)."""
    rows = (await session.execute(
        select(AgreementRequirement, Product.slug, Tier.slug)
        .outerjoin(Product, Product.id == AgreementRequirement.product_id)
        .outerjoin(Tier, Tier.id == AgreementRequirement.tier_id)
        .where(AgreementRequirement.agreement_id == agreement_id))).all()
    out = {}
    for requirement, product, tier in rows:
        target = requirement.stage_key or product or tier or requirement.partner_type or ""
        out[(str(requirement.scope), target)] = requirement
    return out


async def _apply_requirements(ctx: Context, path: str, agreement: Agreement, item: AgreementSpec) -> None:
    existing = await _requirement_keys(ctx.session, agreement.id)
    for j, requirement in enumerate(item.requirements):
        key = requirement.key()
        if key in existing:
            continue
        where = f"{path}.requirements[{j}]"
        target = await _target(ctx, where, requirement)
        with ctx.at(where, rename={"stage_key": "stage", "product_id": "product", "tier_id": "tier"}):
            await agreements.create_requirement(ctx.session, ctx.actor, agreement, scope=requirement.scope, **target)
        ctx.record(CREATE, "agreement requirement", _requirement_name(item.slug, key))
    wanted = {r.key() for r in item.requirements}
    for key, row in existing.items():
        if key not in wanted:
            await ctx.remove(f"{path}.requirements",
                             Change(DELETE, "agreement requirement", _requirement_name(item.slug, key)),
                             lambda row=row: agreements.delete_requirement(ctx.session, ctx.actor, row))


def _requirement_name(slug: str, key: tuple[str, str]) -> str:
    scope, target = key
    return f"{slug}/{scope}" + (f":{target}" if target else "")


async def prune_agreements(ctx: Context, spec: ProgramSpec) -> None:
    declared = {a.slug for a in spec.agreements}
    for row in await ctx.session.scalars(select(Agreement).order_by(Agreement.slug)):
        if row.slug in declared:
            continue
        published = any(v.published_at is not None for v in await agreements.versions(ctx.session, row.id))
        if not published:
            await ctx.remove(f"agreement {row.slug}", Change(DELETE, "agreement", row.slug),
                             lambda row=row: agreements.delete_agreement(ctx.session, ctx.actor, row))
            continue
        requirements = list((await _requirement_keys(ctx.session, row.id)).values())
        drafts = [v for v in await agreements.versions(ctx.session, row.id) if v.published_at is None]
        if requirements or drafts:
            await ctx.remove(f"agreement {row.slug}",
                             Change(REMOVE, "agreement", row.slug,
                                    note="published: kept for the record; its requirements and draft removed"),
                             lambda r=requirements, d=drafts: _end(ctx, r, d))


async def _end(ctx: Context, requirements: list[AgreementRequirement], drafts: list[AgreementVersion]) -> None:
    for requirement in requirements:
        await agreements.delete_requirement(ctx.session, ctx.actor, requirement)
    for draft in drafts:
        await agreements.delete_version(ctx.session, ctx.actor, draft)


# --- export -------------------------------------------------------------------------

async def export_agreements(session: Any) -> list[dict[str, Any]]:
    """The agreements as `accord apply` reads them (fields at their default left out)."""
    out = []
    for agreement in await session.scalars(select(Agreement).order_by(Agreement.slug)):
        item: dict[str, Any] = {"slug": agreement.slug, "title": agreement.title}
        if agreement.description:
            item["description"] = agreement.description
        versions = []
        for version in reversed(await agreements.versions(session, agreement.id)):
            entry: dict[str, Any] = {"number": version.number, "body": version.body}
            for name, default in (("changes_summary", ""), ("material", True), ("grace_days", 30)):
                if getattr(version, name) != default:
                    entry[name] = getattr(version, name)
            if version.published_at is None:
                if version.effective_at is not None:
                    entry["effective_at"] = _iso(version.effective_at)
                entry["draft"] = True
            else:
                if version.effective_at != version.published_at:
                    entry["effective_at"] = _iso(version.effective_at)
                entry["published_at"] = _iso(version.published_at)
            versions.append(entry)
        if versions:
            item["versions"] = versions
        requirements = []
        for (scope, target), _ in sorted((await _requirement_keys(session, agreement.id)).items()):
            requirement: dict[str, Any] = {"scope": scope}
            if target:
                requirement[{"stage": "stage", "product": "product", "tier": "tier",
                             "partner_type": "partner_type"}[scope]] = target
            requirements.append(requirement)
        if requirements:
            item["requirements"] = requirements
        out.append(item)
    return out


__all__ = ["apply_agreements", "prune_agreements", "export_agreements"]
