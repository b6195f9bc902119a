"""Catalog logic: APIs, metrics and mapping rules. Never commits; the caller does."""
from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.audit import service as audit
from accord.auth.actor import Actor
from accord.catalog import openapi
from accord.catalog.models import Api, MappingRule, Metric, Visibility
from accord.catalog.schemas import (
    ApiCreate,
    ApiUpdate,
    GenerateResult,
    MappingRuleCreate,
    MappingRuleUpdate,
    MetricCreate,
    MetricUpdate,
)
from accord.core.errors import ProblemError, conflict, invalid, not_found, reject_nulls

ROOT_METRIC = "hits"


# --- APIs -----------------------------------------------------------------

def list_apis(*, visibility: Visibility | None = None, search: str | None = None) -> Select:
    stmt = select(Api).order_by(Api.slug)
    if visibility:
        stmt = stmt.where(Api.visibility == visibility)
    if search:
        stmt = stmt.where(func.lower(Api.name).contains(search.lower()) | Api.slug.contains(search.lower()))
    return stmt


async def get_api(session: AsyncSession, api_id: uuid.UUID) -> Api:
    api = await session.get(Api, api_id)
    if api is None:
        raise not_found("API")
    return api


async def get_api_by_slug(session: AsyncSession, slug: str) -> Api | None:
    return await session.scalar(select(Api).where(Api.slug == slug))


async def _check_unique(session: AsyncSession, api_id: uuid.UUID | None, slug: str | None, prefix: str,
                        hostname: str) -> None:
    if slug is not None:
        other = await session.scalar(select(Api.id).where(Api.slug == slug))
        if other is not None and other != api_id:
            raise conflict("slug", f"an API with slug {slug!r} already exists")
    other = await session.scalar(select(Api.id).where(Api.path_prefix == prefix, Api.hostname == hostname))
    if other is not None and other != api_id:
        where = f" on {hostname}" if hostname else ""
        raise conflict("path_prefix", f"another API already serves {prefix!r}{where}")


async def create_api(session: AsyncSession, actor: Actor, data: ApiCreate) -> Api:
    await _check_unique(session, None, data.slug, data.path_prefix, data.hostname)
    api = Api(
        name=data.name, slug=data.slug, description=data.description, path_prefix=data.path_prefix,
        hostname=data.hostname,
        sandbox_upstream_url=data.upstreams.sandbox, production_upstream_url=data.upstreams.production,
        visibility=data.visibility, lifecycle=data.lifecycle, credential_location=data.credential_location,
        credential_name=data.credential_name, end_user_header=data.end_user_header,
        forward_identity=data.forward_identity,
        openapi=openapi.parse_document(data.openapi) if data.openapi is not None else None,
    )
    session.add(api)
    await session.flush()
    session.add(Metric(api_id=api.id, system_name=ROOT_METRIC, friendly_name="Hits",
                       description="Every call to the API"))
    await audit.record(session, actor, "api.created", api, after=_audit_view(api))
    return api


def _audit_view(api: Api) -> dict[str, Any]:
    view = audit.snapshot(api)
    view["openapi"] = "(document)" if api.openapi is not None else None
    return view


async def update_api(session: AsyncSession, actor: Actor, api_id: uuid.UUID, data: ApiUpdate) -> Api:
    api = await get_api(session, api_id)
    before = _audit_view(api)
    changes = data.model_dump(exclude_unset=True)
    hostname = changes.get("hostname")
    await _check_unique(session, api.id, changes.get("slug"), changes.get("path_prefix") or api.path_prefix,
                        api.hostname if hostname is None else hostname)
    if "upstreams" in changes:
        upstreams = data.upstreams
        if upstreams is not None:
            fields = upstreams.model_fields_set
            if "sandbox" in fields:
                api.sandbox_upstream_url = upstreams.sandbox
            if "production" in fields:
                api.production_upstream_url = upstreams.production
        changes.pop("upstreams")
    if "openapi" in changes:
        api.openapi = openapi.parse_document(data.openapi) if data.openapi is not None else None
        changes.pop("openapi")
    reject_nulls(changes)
    for key, value in changes.items():
        setattr(api, key, value)
    await audit.record(session, actor, "api.updated", api, before=before, after=_audit_view(api))
    return api


async def delete_api(session: AsyncSession, actor: Actor, api_id: uuid.UUID) -> None:
    from accord.products.models import ProductApi

    api = await get_api(session, api_id)
    used = await session.scalar(select(func.count()).select_from(ProductApi).where(ProductApi.api_id == api.id))
    if used:
        raise ProblemError("conflict", f"the API is in {used} product(s); remove it from them first",
                           [{"field": "api_id", "reason": "in use by products"}])
    before = _audit_view(api)
    await session.delete(api)
    await audit.record(session, actor, "api.deleted", target_type="apis", target_id=str(api_id), before=before)


# --- metrics --------------------------------------------------------------

def list_metrics(api_id: uuid.UUID) -> Select:
    return select(Metric).where(Metric.api_id == api_id).order_by(Metric.parent_id.is_not(None), Metric.system_name)


async def metric_by_name(session: AsyncSession, api_id: uuid.UUID, name: str, field: str = "metric") -> Metric:
    metric = await session.scalar(select(Metric).where(Metric.api_id == api_id, Metric.system_name == name))
    if metric is None:
        raise invalid(field, f"no metric {name!r} in this API")
    return metric


async def get_metric(session: AsyncSession, api_id: uuid.UUID, metric_id: uuid.UUID) -> Metric:
    metric = await session.get(Metric, metric_id)
    if metric is None or metric.api_id != api_id:
        raise not_found("metric")
    return metric


async def create_metric(session: AsyncSession, actor: Actor, api_id: uuid.UUID, data: MetricCreate) -> Metric:
    api = await get_api(session, api_id)
    if await session.scalar(select(Metric.id).where(Metric.api_id == api.id, Metric.system_name == data.system_name)):
        raise conflict("system_name", f"metric {data.system_name!r} already exists")
    parent = await metric_by_name(session, api.id, data.parent or ROOT_METRIC, "parent")
    metric = Metric(api_id=api.id, parent_id=parent.id, system_name=data.system_name,
                    friendly_name=data.friendly_name, unit=data.unit, description=data.description)
    session.add(metric)
    await audit.record(session, actor, "metric.created", metric)
    return metric


async def update_metric(session: AsyncSession, actor: Actor, api_id: uuid.UUID, metric_id: uuid.UUID,
                        data: MetricUpdate) -> Metric:
    metric = await get_metric(session, api_id, metric_id)
    before = audit.snapshot(metric)
    changes = data.model_dump(exclude_unset=True)
    reject_nulls(changes)
    for key, value in changes.items():
        setattr(metric, key, value)
    await audit.record(session, actor, "metric.updated", metric, before=before)
    return metric


async def delete_metric(session: AsyncSession, actor: Actor, api_id: uuid.UUID, metric_id: uuid.UUID) -> None:
    metric = await get_metric(session, api_id, metric_id)
    if metric.system_name == ROOT_METRIC:
        raise ProblemError("conflict", "the root metric `hits` cannot be deleted",
                           [{"field": "metric_id", "reason": "root metric"}])
    before = audit.snapshot(metric)
    await session.delete(metric)
    await audit.record(session, actor, "metric.deleted", target_type="metrics", target_id=str(metric_id),
                       before=before)


# --- mapping rules --------------------------------------------------------

def list_rules(api_id: uuid.UUID) -> Select:
    return select(MappingRule).where(MappingRule.api_id == api_id).order_by(MappingRule.position, MappingRule.pattern)


async def get_rule(session: AsyncSession, api_id: uuid.UUID, rule_id: uuid.UUID) -> MappingRule:
    rule = await session.get(MappingRule, rule_id)
    if rule is None or rule.api_id != api_id:
        raise not_found("mapping rule")
    return rule


async def _check_rule_unique(session: AsyncSession, api_id: uuid.UUID, verb: str, pattern: str,
                             rule_id: uuid.UUID | None) -> None:
    other = await session.scalar(select(MappingRule.id).where(
        MappingRule.api_id == api_id, MappingRule.http_method == verb, MappingRule.pattern == pattern))
    if other is not None and other != rule_id:
        raise conflict("pattern", f"a rule for {verb} {pattern} already exists")


async def create_rule(session: AsyncSession, actor: Actor, api_id: uuid.UUID, data: MappingRuleCreate) -> MappingRule:
    api = await get_api(session, api_id)
    metric = await metric_by_name(session, api.id, data.metric)
    await _check_rule_unique(session, api.id, data.http_method, data.pattern, None)
    rule = MappingRule(api_id=api.id, metric_id=metric.id, http_method=data.http_method, pattern=data.pattern,
                       delta=data.delta, position=data.position, last=data.last)
    session.add(rule)
    await audit.record(session, actor, "mapping_rule.created", rule)
    return rule


async def update_rule(session: AsyncSession, actor: Actor, api_id: uuid.UUID, rule_id: uuid.UUID,
                      data: MappingRuleUpdate) -> MappingRule:
    rule = await get_rule(session, api_id, rule_id)
    before = audit.snapshot(rule)
    changes = data.model_dump(exclude_unset=True)
    reject_nulls(changes)
    if "metric" in changes:
        rule.metric_id = (await metric_by_name(session, api_id, changes.pop("metric"))).id
    for key, value in changes.items():
        setattr(rule, key, value)
    await _check_rule_unique(session, api_id, rule.http_method, rule.pattern, rule.id)
    await audit.record(session, actor, "mapping_rule.updated", rule, before=before)
    return rule


async def delete_rule(session: AsyncSession, actor: Actor, api_id: uuid.UUID, rule_id: uuid.UUID) -> None:
    rule = await get_rule(session, api_id, rule_id)
    before = audit.snapshot(rule)
    await session.delete(rule)
    await audit.record(session, actor, "mapping_rule.deleted", target_type="mapping_rules",
                       target_id=str(rule_id), before=before)


async def generate_from_openapi(session: AsyncSession, actor: Actor, api_id: uuid.UUID) -> GenerateResult:
    """One method (metric under `hits`) and one exact mapping rule per OpenAPI operation; idempotent."""
    api = await get_api(session, api_id)
    if api.openapi is None:
        raise invalid("openapi", "this API has no OpenAPI document; set one first")
    root = await metric_by_name(session, api.id, ROOT_METRIC)
    existing = {m.system_name: m for m in (await session.scalars(select(Metric).where(Metric.api_id == api.id)))}
    rules = {(r.http_method, r.pattern) for r in await session.scalars(select(MappingRule).where(
        MappingRule.api_id == api.id))}
    position = await session.scalar(select(func.max(MappingRule.position)).where(MappingRule.api_id == api.id)) or 0
    metrics_created: list[str] = []
    rules_created: list[str] = []
    for op in openapi.operations(api.openapi):
        metric = existing.get(op.system_name)
        if metric is None:
            metric = Metric(api_id=api.id, parent_id=root.id, system_name=op.system_name,
                            friendly_name=op.friendly_name, description=op.description)
            session.add(metric)
            await session.flush()
            existing[op.system_name] = metric
            metrics_created.append(op.system_name)
        if (op.verb, op.pattern) not in rules:
            position += 1
            session.add(MappingRule(api_id=api.id, metric_id=metric.id, http_method=op.verb,
                                    pattern=op.pattern, position=position))
            rules.add((op.verb, op.pattern))
            rules_created.append(f"{op.verb} {op.pattern}")
    await audit.record(session, actor, "api.generated_from_openapi", target_type="apis", target_id=str(api.id),
                       after={"metrics": metrics_created, "rules": rules_created})
    return GenerateResult(metrics_created=metrics_created, rules_created=rules_created)
