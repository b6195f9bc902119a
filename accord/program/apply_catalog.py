"""Applying the program's tiers, custom fields and APIs (with their metrics and mapping rules)."""
from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from accord.catalog import service as catalog
from accord.catalog.models import Api, MappingRule, Metric
from accord.catalog.schemas import (
    ApiCreate,
    ApiUpdate,
    MappingRuleCreate,
    MappingRuleUpdate,
    MetricCreate,
    MetricUpdate,
    Upstreams,
)
from accord.customfields import service as customfields
from accord.customfields.models import FieldDefinition
from accord.customfields.schemas import FieldDefinitionCreate, FieldDefinitionUpdate
from accord.partners import service as partners
from accord.partners.models import Tier
from accord.partners.schemas import TierCreate, TierUpdate
from accord.program.changes import CREATE, DELETE, UPDATE, Change, FieldChange, diff
from accord.program.context import Context
from accord.program.errors import ProgramError
from accord.program.spec import ROOT_METRIC, ApiSpec, MetricSpec, ProgramSpec, TierSpec

# Ranks a tier is parked on while tiers swap ranks (ranks are unique, so a swap needs a free one).
_PARKING_RANK = 1_000_000


# --- tiers ----------------------------------------------------------------------

def _tier_desired(tier: TierSpec) -> dict[str, Any]:
    return {"name": tier.name, "rank": tier.rank, "description": tier.description}


async def _park_rank_holders(ctx: Context, spec: ProgramSpec, current: dict[str, Tier]) -> None:
    """Move tiers out of the way of ranks the file gives to other tiers, when they move too (or go)."""
    by_rank = {t.rank: t for t in current.values()}
    in_file = {t.slug: t for t in spec.tiers}
    used = set(by_rank) | {t.rank for t in spec.tiers}
    parking = _PARKING_RANK
    for tier in spec.tiers:
        holder = by_rank.get(tier.rank)
        if holder is None or holder.slug == tier.slug:
            continue
        moving = holder.slug in in_file or ctx.prune
        if not moving:
            continue  # the create/update below reports the clash on this tier's rank
        while parking in used:
            parking -= 1
        used.add(parking)
        del by_rank[holder.rank]
        await partners.update_tier(ctx.session, ctx.actor, holder.id, TierUpdate(rank=parking))


async def apply_tiers(ctx: Context, spec: ProgramSpec) -> None:
    current = {t.slug: t for t in await ctx.session.scalars(select(Tier))}
    # The diff is taken before any tier is parked, so it shows the real old ranks.
    changes = {t.slug: diff(_tier_fields(current[t.slug]), _tier_desired(t)) for t in spec.tiers if t.slug in current}
    await _park_rank_holders(ctx, spec, current)
    for i, tier in enumerate(spec.tiers):
        path = f"tiers[{i}]"
        row = current.get(tier.slug)
        if row is None:
            with ctx.at(path):
                await partners.create_tier(ctx.session, ctx.actor, TierCreate(slug=tier.slug, **_tier_desired(tier)))
            ctx.record(CREATE, "tier", tier.slug)
            continue
        # A parked tier is always one whose rank changes, so its diff moves it off the parking rank.
        fields = changes[tier.slug]
        if fields:
            with ctx.at(path):
                await partners.update_tier(ctx.session, ctx.actor, row.id,
                                           TierUpdate(**{f.name: f.new for f in fields}))
            ctx.record(UPDATE, "tier", tier.slug, fields)


def _tier_fields(tier: Tier) -> dict[str, Any]:
    return {"name": tier.name, "rank": tier.rank, "description": tier.description}


async def prune_tiers(ctx: Context, spec: ProgramSpec) -> None:
    declared = {t.slug for t in spec.tiers}
    for tier in await ctx.session.scalars(select(Tier).order_by(Tier.rank)):
        if tier.slug not in declared:
            await ctx.remove(f"tier {tier.slug}", Change(DELETE, "tier", tier.slug),
                             lambda tier_id=tier.id: partners.delete_tier(ctx.session, ctx.actor, tier_id))


# --- custom fields --------------------------------------------------------------------

async def apply_custom_fields(ctx: Context, spec: ProgramSpec) -> None:
    current = {(d.target, d.key): d for d in await ctx.session.scalars(select(FieldDefinition))}
    for i, field in enumerate(spec.custom_fields):
        path = f"custom_fields[{i}]"
        key = f"{field.target}.{field.key}"
        row = current.get((field.target, field.key))
        if row is None:
            with ctx.at(path):
                await customfields.create_definition(ctx.session, ctx.actor,
                                                     FieldDefinitionCreate(**field.model_dump()))
            ctx.record(CREATE, "custom field", key)
            continue
        if row.type != field.type:
            raise ProgramError([(f"{path}.type", f"the field is {row.type}; the type of an existing field cannot "
                                                 "change (remove it with --prune, then add it again)")])
        desired = field.model_dump(include={"label", "required", "choices", "position", "hidden"})
        current_values = {name: getattr(row, name) for name in desired}
        fields = diff(current_values, desired)
        if fields:
            with ctx.at(path):
                await customfields.update_definition(ctx.session, ctx.actor, row.id,
                                                     FieldDefinitionUpdate(**{f.name: f.new for f in fields}))
            ctx.record(UPDATE, "custom field", key, fields)


async def prune_custom_fields(ctx: Context, spec: ProgramSpec) -> None:
    declared = {(f.target, f.key) for f in spec.custom_fields}
    rows = await ctx.session.scalars(select(FieldDefinition).order_by(FieldDefinition.target, FieldDefinition.key))
    for row in rows:
        if (row.target, row.key) not in declared:
            await ctx.remove(f"custom field {row.target}.{row.key}",
                             Change(DELETE, "custom field", f"{row.target}.{row.key}"),
                             lambda row_id=row.id: customfields.delete_definition(ctx.session, ctx.actor, row_id))


# --- APIs --------------------------------------------------------------------------

def _api_desired(api: ApiSpec) -> dict[str, Any]:
    return {
        "name": api.name, "description": api.description, "path_prefix": api.path_prefix, "hostname": api.hostname,
        "visibility": api.visibility, "lifecycle": api.lifecycle, "credential_location": api.credential_location,
        "credential_name": api.credential_name, "upstreams.sandbox": api.upstreams.sandbox,
        "upstreams.production": api.upstreams.production, "openapi": api.openapi,
    }


def _api_fields(api: Api) -> dict[str, Any]:
    return {
        "name": api.name, "description": api.description, "path_prefix": api.path_prefix, "hostname": api.hostname,
        "visibility": api.visibility, "lifecycle": api.lifecycle, "credential_location": api.credential_location,
        "credential_name": api.credential_name, "upstreams.sandbox": api.sandbox_upstream_url,
        "upstreams.production": api.production_upstream_url, "openapi": api.openapi,
    }


def _api_update(fields: list[FieldChange]) -> ApiUpdate:
    values: dict[str, Any] = {}
    upstreams: dict[str, Any] = {}
    for f in fields:
        if f.name.startswith("upstreams."):
            upstreams[f.name.removeprefix("upstreams.")] = f.new
        else:
            values[f.name] = f.new
    if upstreams:
        values["upstreams"] = Upstreams(**upstreams)
    return ApiUpdate(**values)


async def _park_route_holders(ctx: Context, spec: ProgramSpec, current: dict[str, Api]) -> set[str]:
    """Move APIs off routes (host name, path prefix) the file gives to other APIs, when they move too (or go).

    A route is unique, so without this two APIs could not swap routes in one apply. The
    parking prefix is the API's own id, which no other API can hold. Returns the slugs parked.
    """
    by_route = {(a.hostname, a.path_prefix): a for a in current.values()}
    in_file = {a.slug for a in spec.apis}
    parked: set[str] = set()
    for i, api in enumerate(spec.apis):
        holder = by_route.get((api.hostname, api.path_prefix))
        if holder is None or holder.slug == api.slug:
            continue
        if holder.slug not in in_file and not ctx.prune:
            continue  # it stays where it is: the create/update below reports the clash on this API's route
        del by_route[(holder.hostname, holder.path_prefix)]
        with ctx.at(f"apis[{i}]"):
            await catalog.update_api(ctx.session, ctx.actor, holder.id,
                                     ApiUpdate(path_prefix=f"/.parked/{holder.id}"))
        parked.add(holder.slug)
    return parked


async def apply_apis(ctx: Context, spec: ProgramSpec) -> None:
    current = {a.slug: a for a in await ctx.session.scalars(select(Api))}
    # The diff is taken before any API is parked, so it shows the real old routes.
    changes = {a.slug: diff(_api_fields(current[a.slug]), _api_desired(a)) for a in spec.apis if a.slug in current}
    parked = await _park_route_holders(ctx, spec, current)
    for i, api in enumerate(spec.apis):
        path = f"apis[{i}]"
        row = current.get(api.slug)
        rename = {"upstreams.sandbox": "upstreams.sandbox", "upstreams.production": "upstreams.production"}
        if row is None:
            with ctx.at(path, rename):
                row = await catalog.create_api(ctx.session, ctx.actor, ApiCreate(
                    name=api.name, slug=api.slug, description=api.description, path_prefix=api.path_prefix,
                    hostname=api.hostname,
                    upstreams=Upstreams(sandbox=api.upstreams.sandbox, production=api.upstreams.production),
                    visibility=api.visibility, lifecycle=api.lifecycle, credential_location=api.credential_location,
                    credential_name=api.credential_name, openapi=api.openapi))
            ctx.record(CREATE, "api", api.slug)
        else:
            fields = changes[api.slug]
            update = _api_update(fields)
            if api.slug in parked:  # back from the parking prefix, also when only its host name changes
                update.path_prefix = api.path_prefix
            if fields:
                with ctx.at(path, rename):
                    await catalog.update_api(ctx.session, ctx.actor, row.id, update)
                ctx.record(UPDATE, "api", api.slug, fields)
        await _apply_metrics(ctx, api, row.id, path)
        await _apply_rules(ctx, api, row.id, path)


def _parents_first(metrics: list[MetricSpec]) -> list[tuple[int, MetricSpec]]:
    """The metrics in file order, except that a metric comes after its parent."""
    by_name = {m.name: (i, m) for i, m in enumerate(metrics)}
    ordered: list[tuple[int, MetricSpec]] = []
    placed: set[str] = set()

    def place(name: str) -> None:
        if name in placed or name not in by_name:
            return
        placed.add(name)
        index, metric = by_name[name]
        if metric.parent:
            place(metric.parent)
        ordered.append((index, metric))

    for metric in metrics:
        place(metric.name)
    return ordered


async def _metrics_of(ctx: Context, api_id: uuid.UUID) -> dict[str, Metric]:
    return {m.system_name: m for m in await ctx.session.scalars(select(Metric).where(Metric.api_id == api_id))}


async def _apply_metrics(ctx: Context, api: ApiSpec, api_id: uuid.UUID, api_path: str) -> None:
    rows = await _metrics_of(ctx, api_id)
    names = {m.id: m.system_name for m in rows.values()}
    for index, metric in _parents_first(api.metrics):
        path = f"{api_path}.metrics[{index}]"
        key = f"{api.slug}.{metric.name}"
        desired = metric.desired()
        row = rows.get(metric.name)
        if row is None:
            with ctx.at(path, {"system_name": "name"}):
                row = await catalog.create_metric(ctx.session, ctx.actor, api_id, MetricCreate(
                    system_name=metric.name, parent=metric.parent, **desired))
            rows[metric.name], names[row.id] = row, metric.name
            ctx.record(CREATE, "metric", key)
            continue
        if metric.name != ROOT_METRIC:
            parent = names.get(row.parent_id) if row.parent_id else None
            if parent != (metric.parent or ROOT_METRIC):
                raise ProgramError([(f"{path}.parent", f"the metric is under {parent!r}; the parent of an existing "
                                                       "metric cannot change")])
        fields = diff({name: getattr(row, name) for name in desired}, desired)
        if fields:
            with ctx.at(path):
                await catalog.update_metric(ctx.session, ctx.actor, api_id, row.id,
                                            MetricUpdate(**{f.name: f.new for f in fields}))
            ctx.record(UPDATE, "metric", key, fields)


async def _apply_rules(ctx: Context, api: ApiSpec, api_id: uuid.UUID, api_path: str) -> None:
    names = {m.id: m.system_name for m in (await _metrics_of(ctx, api_id)).values()}
    rows = {(r.http_method, r.pattern): r
            for r in await ctx.session.scalars(select(MappingRule).where(MappingRule.api_id == api_id))}
    for index, rule in enumerate(api.mapping_rules):
        path = f"{api_path}.mapping_rules[{index}]"
        key = f"{api.slug} {rule.method} {rule.pattern}"
        desired = {"metric": rule.metric, "delta": rule.delta, "position": api.rule_position(index),
                   "last": rule.last}
        row = rows.get((rule.method, rule.pattern))
        rename = {"http_method": "method"}
        if row is None:
            with ctx.at(path, rename):
                await catalog.create_rule(ctx.session, ctx.actor, api_id, MappingRuleCreate(
                    http_method=rule.method, pattern=rule.pattern, **desired))
            ctx.record(CREATE, "mapping rule", key)
            continue
        current = {"metric": names.get(row.metric_id), "delta": row.delta, "position": row.position,
                   "last": row.last}
        fields = diff(current, desired)
        if fields:
            with ctx.at(path, rename):
                await catalog.update_rule(ctx.session, ctx.actor, api_id, row.id,
                                          MappingRuleUpdate(**{f.name: f.new for f in fields}))
            ctx.record(UPDATE, "mapping rule", key, fields)


def _depth(metric: Metric, by_id: dict[uuid.UUID, Metric]) -> int:
    depth, current = 0, metric
    while current.parent_id is not None and current.parent_id in by_id and depth < 100:
        depth, current = depth + 1, by_id[current.parent_id]
    return depth


async def prune_metrics_and_rules(ctx: Context, spec: ProgramSpec) -> None:
    """Remove the mapping rules and metrics of declared APIs that the file no longer lists."""
    apis = {a.slug: a for a in await ctx.session.scalars(select(Api))}
    for api in spec.apis:
        row = apis.get(api.slug)
        if row is None:
            continue
        declared_rules = {(r.method, r.pattern) for r in api.mapping_rules}
        rules = await ctx.session.scalars(select(MappingRule).where(MappingRule.api_id == row.id)
                                          .order_by(MappingRule.position, MappingRule.pattern))
        for rule in rules:
            if (rule.http_method, rule.pattern) not in declared_rules:
                await ctx.remove(f"mapping rule {api.slug} {rule.http_method} {rule.pattern}",
                                 Change(DELETE, "mapping rule", f"{api.slug} {rule.http_method} {rule.pattern}"),
                                 lambda rule_id=rule.id, api_id=row.id: catalog.delete_rule(
                                     ctx.session, ctx.actor, api_id, rule_id))
        declared = {ROOT_METRIC, *(m.name for m in api.metrics)}
        metrics = await _metrics_of(ctx, row.id)
        by_id = {m.id: m for m in metrics.values()}
        # Deepest first: deleting a metric deletes the metrics under it too.
        for metric in sorted(metrics.values(), key=lambda m: (-_depth(m, by_id), m.system_name)):
            if metric.system_name not in declared:
                await ctx.remove(f"metric {api.slug}.{metric.system_name}",
                                 Change(DELETE, "metric", f"{api.slug}.{metric.system_name}"),
                                 lambda metric_id=metric.id, api_id=row.id: catalog.delete_metric(
                                     ctx.session, ctx.actor, api_id, metric_id))


async def prune_apis(ctx: Context, spec: ProgramSpec) -> None:
    declared = {a.slug for a in spec.apis}
    for api in await ctx.session.scalars(select(Api).order_by(Api.slug)):
        if api.slug not in declared:
            await ctx.remove(f"api {api.slug}", Change(DELETE, "api", api.slug),
                             lambda api_id=api.id: catalog.delete_api(ctx.session, ctx.actor, api_id))
