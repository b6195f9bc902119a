"""Build the gateway's `Snapshot` from the database (SQLAlchemy Core; off the hot path).

Everything a request needs is resolved here once: credential hash → app →
partner → per-API access (plan, allowed methods, limits, visibility). Rules
that do not change with time (audience vs. visibility, subscription state)
become a precomputed `denial`; expiry is checked per request.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from accord.agreements.gate import production_gates
from accord.apps.models import Application, ApplicationSubscription, Credential
from accord.catalog.models import Api, MappingRule, Metric
from accord.catalog.patterns import split_pattern
from accord.core.version import VERSION_QUERY
from accord.gateway import snapshot as s
from accord.gateway.proxy import stripped_headers
from accord.partners.models import Partner, visible_tiers
from accord.plans.models import Plan, PlanDisabledMetric, PlanLimit
from accord.products.models import Product, ProductApi, ProductMethod
from accord.subscriptions.models import Subscription, SubscriptionState

_VAR = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


def upstream_secret(server_key: str, api_id: str) -> str:
    """The per-API value of `X-Accord-Gateway-Secret`; derived, so nothing extra is stored."""
    return hmac.new(server_key.encode(), f"upstream:{api_id}".encode(), hashlib.sha256).hexdigest()


def compile_pattern(pattern: str) -> tuple[re.Pattern[str], tuple[tuple[str, str | None], ...]]:
    path, exact, pairs = split_pattern(pattern)
    pieces, last = [], 0
    for match in _VAR.finditer(path):
        pieces.append(re.escape(path[last:match.start()]))
        pieces.append(r"[^/]+")
        last = match.end()
    pieces.append(re.escape(path[last:]))
    regex = "^" + "".join(pieces) + ("$" if exact else "")
    query = tuple((key, None if _VAR.fullmatch(value) else value) for key, value in pairs)
    return re.compile(regex), query


def _mock_examples(document: dict[str, Any] | None) -> dict[tuple[str, str], tuple[int, bytes]]:
    """(VERB, OpenAPI path template) → (status, JSON body) from each operation's first 2xx example."""
    out: dict[tuple[str, str], tuple[int, bytes]] = {}
    for path, item in ((document or {}).get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        for verb, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for status, response in sorted(operation["responses"].items()):
                if not str(status).startswith("2") or not isinstance(response, dict):
                    continue
                content = (response.get("content") or {}).get("application/json") or {}
                example = content.get("example")
                if example is None and content.get("examples"):
                    first = next(iter(content["examples"].values()))
                    example = first.get("value") if isinstance(first, dict) else None
                if example is None:
                    example = (content.get("schema") or {}).get("example")
                if example is not None:
                    out[(verb.upper(), path)] = (int(status), json.dumps(example).encode())
                    break
    return out


def _epoch(moment: Any) -> float | None:
    return moment.timestamp() if moment is not None else None


async def build_snapshot(connection: AsyncConnection, server_key: str) -> s.Snapshot:
    version = (await connection.execute(VERSION_QUERY)).scalar() or 0

    async def rows(table: Any, *where: Any) -> list[Any]:
        return list((await connection.execute(select(table).where(*where) if where else select(table))).all())

    metrics = await rows(Metric)
    parents = {str(m.id): (str(m.parent_id) if m.parent_id else None) for m in metrics}
    metrics_by_api: dict[str, list[Any]] = defaultdict(list)
    for m in metrics:
        metrics_by_api[str(m.api_id)].append(m)
    rules_by_api: dict[str, list[Any]] = defaultdict(list)
    for rule in sorted(await rows(MappingRule), key=lambda r: (r.position, r.pattern)):
        rules_by_api[str(rule.api_id)].append(rule)

    apis: dict[str, s.ApiEntry] = {}
    for api in await rows(Api):
        api_id = str(api.id)
        compiled = []
        for rule in rules_by_api[api_id]:
            regex, query = compile_pattern(rule.pattern)
            compiled.append(s.CompiledRule(rule.http_method, regex, query, str(rule.metric_id), rule.delta, rule.last))
        apis[api_id] = s.ApiEntry(
            id=api_id, slug=api.slug, prefix=api.path_prefix, visibility=api.visibility,
            upstreams={"sandbox": api.sandbox_upstream_url, "production": api.production_upstream_url},
            credential_location=api.credential_location, credential_name=api.credential_name,
            rules=tuple(compiled),
            metric_parents={str(m.id): parents[str(m.id)] for m in metrics_by_api[api_id]},
            metric_names={str(m.id): m.system_name for m in metrics_by_api[api_id]},
            upstream_secret=upstream_secret(server_key, api_id),
            end_user_header=api.end_user_header.lower(), forward_identity=api.forward_identity,
            stripped_headers=stripped_headers(api.credential_location, api.credential_name),
            mock_examples=_mock_examples(api.openapi), hostname=api.hostname,
        )

    products = {str(p.id): p for p in await rows(Product)}
    product_apis: dict[str, list[str]] = defaultdict(list)
    for row in await rows(ProductApi):
        product_apis[str(row.product_id)].append(str(row.api_id))
    product_methods: dict[str, set[str]] = defaultdict(set)
    for row in await rows(ProductMethod):
        product_methods[str(row.product_id)].add(str(row.metric_id))
    plans = {str(p.id): p for p in await rows(Plan)}
    limits: dict[str, list[s.LimitRule]] = defaultdict(list)
    for row in await rows(PlanLimit):
        limits[str(row.plan_id)].append(s.LimitRule(str(row.metric_id), row.period, int(row.value)))
    disabled: dict[str, set[str]] = defaultdict(set)
    for row in await rows(PlanDisabledMetric):
        disabled[str(row.plan_id)].add(str(row.metric_id))

    partners = {str(p.id): s.PartnerEntry(str(p.id), p.slug, p.status, p.audience) for p in await rows(Partner)}
    subscriptions = {str(x.id): x for x in await rows(Subscription)}
    agreement_gates = await production_gates(connection)  # (partner, product) → (refused from, detail)
    app_subscriptions: dict[str, list[str]] = defaultdict(list)
    for row in await rows(ApplicationSubscription):
        app_subscriptions[str(row.application_id)].append(str(row.subscription_id))

    def access_for(partner: s.PartnerEntry, subscription: Any) -> dict[str, s.Access]:
        product = products[str(subscription.product_id)]
        plan = plans[str(subscription.plan_id)]
        plan_id = str(plan.id)
        denial = None
        if subscription.state != SubscriptionState.active:
            denial = s.SUBSCRIPTION_INACTIVE
        elif product.visibility not in visible_tiers(partner.audience):
            denial = s.ABOVE_VISIBILITY
        selected = product_methods.get(str(product.id))
        out = {}
        for api_id in product_apis[str(product.id)]:
            api = apis[api_id]
            if api.visibility not in visible_tiers(partner.audience) and denial is None:
                api_denial = s.ABOVE_VISIBILITY
            else:
                api_denial = denial
            api_selected = {m for m in selected or () if m in api.metric_parents} or None
            out[api_id] = s.Access(
                subscription_id=str(subscription.id), plan_id=plan_id, plan_slug=plan.slug, denial=api_denial,
                allowed_http_methods=frozenset(m.upper() for m in plan.allowed_http_methods)
                if plan.allowed_http_methods is not None else None,
                allowed_metrics=frozenset(api_selected) if api_selected else None,
                disabled_metrics=frozenset(disabled[plan_id]),
                limits=tuple(limit for limit in limits[plan_id] if limit.metric_id in api.metric_parents),
                agreement_due=agreement_gates.get((partner.id, str(product.id))),
            )
        return out

    apps: dict[str, s.AppEntry] = {}
    for app in await rows(Application):
        app_id = str(app.id)
        partner = partners[str(app.partner_id)]
        access: dict[str, s.Access] = {}
        # An app with several subscriptions to the same API uses the first usable one.
        for subscription_id in app_subscriptions[app_id]:
            for api_id, entry in access_for(partner, subscriptions[subscription_id]).items():
                current = access.get(api_id)
                if current is None or (current.denial is not None and entry.denial is None):
                    access[api_id] = entry
        apps[app_id] = s.AppEntry(app_id, app.app_id, str(app.partner_id), app.environment, app.state, access)

    credentials = {
        c.key_hash: s.CredentialEntry(str(c.id), str(c.application_id), c.kind, _epoch(c.expires_at),
                                      c.revoked_at is not None)
        for c in await rows(Credential)
    }
    ordered = tuple(sorted(((a.prefix, a) for a in apis.values()), key=lambda pair: (not pair[1].hostname,
                                                                                    -len(pair[0]))))
    return s.Snapshot(version=int(version), built_at=time.time(), apis_by_prefix=ordered, credentials=credentials,
                      apps=apps, apps_by_public_id={a.public_app_id: a for a in apps.values()}, partners=partners,
                      routes_by_host=any(a.hostname for a in apis.values()))
