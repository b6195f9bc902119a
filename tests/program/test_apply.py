"""`apply_program` and `export_program` in-process, in the test's rolled-back transaction."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.apps.models import Application, ApplicationState, Credential
from accord.audit.models import AuditEntry
from accord.auth.actor import CLI_ACTOR
from accord.catalog.models import Api, MappingRule
from accord.core.config import Settings
from accord.partners.models import Partner, PartnerStatus, Tier
from accord.plans.models import Plan, PlanLimit
from accord.program.apply import ApplyResult, apply_program
from accord.program.changes import diff
from accord.program.document import load_document, parse_document
from accord.program.errors import ProgramError
from accord.program.export import dump_program, export_program
from accord.subscriptions.models import Subscription, SubscriptionState
from accord.teams.models import MemberRole
from accord.users.models import User
from tests.factories import Factory
from tests.program.helpers import DEMO


async def apply(session: AsyncSession, settings: Settings, program: dict[str, Any] | str, *,
                prune: bool = False) -> ApplyResult:
    document = parse_document(program) if isinstance(program, str) else program
    return await apply_program(session, settings, document, actor=CLI_ACTOR, prune=prune)


def summaries(result: ApplyResult) -> list[str]:
    return [c.summary() for c in result.changes]


def changed_fields(result: ApplyResult, summary: str) -> dict[str, tuple[Any, Any]]:
    change = next(c for c in result.changes if c.summary() == summary)
    return {f.name: (f.old, f.new) for f in change.fields}


async def test_demo_applies_once_exports_back_and_then_changes_nothing(session: AsyncSession,
                                                                     settings: Settings) -> None:
    document = load_document(DEMO)
    first = await apply(session, settings, document)
    # 49 catalog, product and partner changes + 2 agreements with one version and one requirement each.
    assert len(first.changes) == 55 and len(first.secrets) == 4
    assert sum(c.kind == "agreement" and c.action == "create" for c in first.changes) == 2
    assert {(s.partner, s.application, s.environment, s.name) for s in first.secrets} == {
        ("acme-analytics", "Acme Dashboard (sandbox)", "sandbox", "default"),
        ("acme-analytics", "Acme Dashboard", "production", "default"),
        ("bright-agency", "Bright campaigns", "sandbox", "default"),
        ("dana-dev", "Dana's app", "sandbox", "default"),
    }
    second = await apply(session, settings, document)
    assert second.changes == [] and second.secrets == [] and second.left_over == []

    exported = await export_program(session)
    assert exported == document
    assert yaml.safe_load(dump_program(exported)) == document

    # Declared subscriptions are active staff assignments, also on plans needing approval or hidden.
    states = {s.state for s in await session.scalars(select(Subscription))}
    assert states == {SubscriptionState.active}
    # Members are passwordless accounts until they set one.
    users = list(await session.scalars(select(User)))
    assert len(users) == 5 and all(u.password_hash is None for u in users)
    entries = list(await session.scalars(select(AuditEntry)))
    assert entries and {(e.actor_kind, e.actor_id) for e in entries} == {("cli", "cli")}
    assert {"api.created", "plan.created", "partner.created", "credential.created", "user.created",
            "membership.created", "subscription.approved"} <= {e.action for e in entries}


async def test_changes_are_updates_with_old_and_new_values(session: AsyncSession, settings: Settings) -> None:
    document = load_document(DEMO)
    await apply(session, settings, document)
    document["apis"][0]["name"] = "Social API v2"
    document["apis"][0]["mapping_rules"][0]["metric"] = "read_posts"
    document["products"][0]["plans"][1]["pricing"] = {"monthly_fee": "59.00", "currency": "EUR"}
    document["products"][0]["plans"][2]["limits"][1]["value"] = 900
    document["partners"][0]["members"][1]["role"] = "viewer"
    document["partners"][0]["status"] = "suspended"
    document["partners"][0]["tier"] = "platinum"
    document["partners"][1]["subscriptions"][0]["plan"] = "partner"

    result = await apply(session, settings, document)
    assert changed_fields(result, "~ update api social") == {"name": ("Social API", "Social API v2")}
    assert changed_fields(result, "~ update mapping rule social GET /users") == {"metric": ("read_users",
                                                                                           "read_posts")}
    plan = changed_fields(result, "~ update plan social/public")
    assert plan["pricing.currency"] == ("USD", "EUR") and str(plan["pricing.monthly_fee"][1]) == "59.00"
    assert changed_fields(result, "~ update limit social/partner social.hits per minute") == {"value": (600, 900)}
    assert changed_fields(result, "~ update member acme-analytics/bob@acme.example") == {
        "role": (MemberRole.developer, MemberRole.viewer)}
    partner = changed_fields(result, "~ update partner acme-analytics")
    assert partner == {"status": (PartnerStatus.active, "suspended"), "tier": ("gold", "platinum")}
    assert changed_fields(result, "~ update subscription bright-agency/social") == {"plan": ("public", "partner")}
    assert len(result.changes) == 7

    acme = await session.scalar(select(Partner).where(Partner.slug == "acme-analytics"))
    assert acme.status == PartnerStatus.suspended and acme.status_reason
    assert (await apply(session, settings, document)).changes == []
    assert await export_program(session) == document


async def test_invalid_files_list_every_problem_by_path(session: AsyncSession, settings: Settings) -> None:
    document = load_document(DEMO)
    document["apis"][0]["mapping_rules"][2]["metric"] = "nope"
    document["products"][0]["apis"] = ["social", "ghost"]
    document["products"][1]["plans"][0]["min_tier"] = "diamond"
    document["partners"][0]["custom_fields"]["shoe_size"] = 42
    document["partners"][0]["subscriptions"][1]["plan"] = "gold-plan"
    document["partners"][2]["applications"][0]["subscriptions"] = ["insights"]
    with pytest.raises(ProgramError) as caught:
        await apply(session, settings, document)
    assert caught.value.problems == [
        ("apis[0].mapping_rules[2].metric", "no metric 'nope' in this API"),
        ("products[0].apis[1]", "no API 'ghost'"),
        ("products[1].plans[0].min_tier", "no tier 'diamond'"),
        ("partners[0].custom_fields.shoe_size", "no partner custom field 'shoe_size'"),
        ("partners[0].subscriptions[1].plan", "no plan 'gold-plan' in product 'insights'"),
        ("partners[2].applications[0].subscriptions[0]", "the partner has no subscription to product 'insights'"),
    ]
    assert list(await session.scalars(select(Api))) == []


@pytest.mark.parametrize(("mutate", "where", "reason"), [
    (lambda d: d["apis"][1].update(slug="social"), "apis", "API 'social' is listed twice (items 0 and 1)"),
    (lambda d: d["tiers"][0].update(colour="red"), "tiers[0].colour", "unknown field"),
    (lambda d: d["products"][0]["plans"][0]["limits"][0].pop("value"),
     "products[0].plans[0].limits[0].value", "is required"),
    (lambda d: d["products"][0]["plans"][1].update(default=True), "products[0].plans",
     "a product has one default plan, not 2 (trial, public)"),
    (lambda d: d["partners"][0]["members"][0].update(email="alice"), "partners[0].members[0].email",
     "value is not a valid email address: An email address must have an @-sign."),
    (lambda d: d["apis"][0]["mapping_rules"][0].update(pattern="users"), "apis[0].mapping_rules[0].pattern",
     "must start with /"),
])
async def test_structure_errors_name_their_path(session: AsyncSession, settings: Settings, mutate: Any,
                                                where: str, reason: str) -> None:
    document = load_document(DEMO)
    mutate(document)
    with pytest.raises(ProgramError) as caught:
        await apply(session, settings, document)
    assert (where, reason) in caught.value.problems


async def test_without_prune_nothing_is_deleted_with_prune_everything_extra_goes(session: AsyncSession,
                                                                                  settings: Settings) -> None:
    document = load_document(DEMO)
    await apply(session, settings, document)
    smaller = load_document(DEMO)
    smaller["apis"][0]["metrics"].pop()  # delete_post …
    smaller["apis"][0]["mapping_rules"].pop()  # … and its rule
    smaller["products"][0]["plans"][1]["limits"].pop()  # a limit
    smaller["partners"][0]["members"].pop()  # bob
    del smaller["partners"][0]["applications"][0]["credentials"]  # the sandbox key
    del smaller["partners"][1]["applications"]
    del smaller["partners"][1]["subscriptions"]
    smaller["partners"].pop(3)  # internal-mobile, which has history
    smaller["custom_fields"].pop(2)  # application.use_case …
    del smaller["partners"][0]["applications"][1]["custom_fields"]  # … and its value

    kept = await apply(session, settings, smaller)
    assert [c.summary() for c in kept.changes] == ["~ update application acme-analytics/Acme Dashboard"]
    expected = [
        "- delete limit social/public social.create_post per hour",
        "- remove member acme-analytics/bob@acme.example",
        "- revoke credential acme-analytics/Acme Dashboard (sandbox)/default",
        "- cancel subscription bright-agency/social",
        "- delete application bright-agency/Bright campaigns",
        "- close partner internal-mobile (it has history)",
        "- delete mapping rule social DELETE /posts/{id}$",
        "- delete metric social.delete_post",
        "- delete custom field application.use_case",
    ]
    assert sorted(c.summary() for c in kept.left_over) == sorted(expected)

    pruned = await apply(session, settings, smaller, prune=True)
    assert sorted(summaries(pruned)) == sorted(expected)
    assert pruned.left_over == []
    mobile = await session.scalar(select(Partner).where(Partner.slug == "internal-mobile"))
    assert mobile.status == PartnerStatus.closed
    revoked = await session.scalar(select(Credential).join(Application).where(
        Application.name == "Acme Dashboard (sandbox)"))
    assert revoked.revoked_at is not None
    assert await session.scalar(select(Application).where(Application.name == "Bright campaigns")) is None
    assert (await apply(session, settings, smaller, prune=True)).changes == []
    # Closed, not deleted: the partner and its subscription stay for the record.
    smaller["partners"].append({**document["partners"][3], "status": "closed"})
    assert await export_program(session) == smaller


async def test_prune_shrinks_a_product_after_its_plans(session: AsyncSession, settings: Settings) -> None:
    program = """
apis:
  - {slug: a, name: A, path_prefix: /a, visibility: public, metrics: [{name: m1}, {name: m2}]}
  - {slug: b, name: B, path_prefix: /b, visibility: public}
products:
  - slug: p
    name: P
    visibility: public
    apis: [a, b]
    plans:
      - slug: basic
        name: Basic
        limits: [{api: a, metric: m1, period: day, value: 10}, {api: b, metric: hits, period: day, value: 5}]
"""
    await apply(session, settings, program)
    narrower = program.replace("apis: [a, b]", "apis: [a]\n    methods: [a.m1]").replace(
        ", {api: b, metric: hits, period: day, value: 5}", "")
    with pytest.raises(ProgramError) as caught:
        await apply(session, settings, narrower)  # the limit on b stays without --prune, so b cannot leave
    [(where, reason)] = caught.value.problems
    assert where == "products[0].apis" and "change the plan first" in reason
    await session.rollback()

    await apply(session, settings, program)
    result = await apply(session, settings, narrower, prune=True)
    assert summaries(result) == ["~ update product p", "- delete limit p/basic b.hits per day"]
    assert changed_fields(result, "~ update product p") == {"apis": (["a", "b"], ["a"]), "methods": ([], ["a.m1"])}
    assert (await export_program(session))["products"][0]["methods"] == ["a.m1"]
    assert (await apply(session, settings, narrower, prune=True)).changes == []


async def test_tiers_can_swap_ranks(session: AsyncSession, settings: Settings) -> None:
    await apply(session, settings, "tiers: [{slug: a, name: A, rank: 1}, {slug: b, name: B, rank: 2}]")
    result = await apply(session, settings, "tiers: [{slug: a, name: A, rank: 2}, {slug: b, name: B, rank: 1}]")
    assert changed_fields(result, "~ update tier a") == {"rank": (1, 2)}
    assert changed_fields(result, "~ update tier b") == {"rank": (2, 1)}
    assert [t.slug for t in await session.scalars(select(Tier).order_by(Tier.rank))] == ["b", "a"]


async def test_apis_can_swap_path_prefixes_and_host_names(session: AsyncSession, settings: Settings) -> None:
    def program(a: tuple[str, str], b: tuple[str, str], c: tuple[str, str] | None = None) -> str:
        apis = [("a", a), ("b", b)] + ([("c", c)] if c else [])
        return "apis:\n" + "".join(f"  - {{slug: {slug}, name: {slug.upper()}, path_prefix: {prefix}, "
                                    f"hostname: '{host}', visibility: public}}\n" for slug, (prefix, host) in apis)

    await apply(session, settings, program(("/one", "x.example"), ("/two", "y.example"), ("/three", "")))
    swapped = await apply(session, settings, program(("/two", "y.example"), ("/one", "x.example"), ("/three", "")))
    assert changed_fields(swapped, "~ update api a") == {"path_prefix": ("/one", "/two"),
                                                          "hostname": ("x.example", "y.example")}
    assert changed_fields(swapped, "~ update api b") == {"path_prefix": ("/two", "/one"),
                                                          "hostname": ("y.example", "x.example")}
    routes = {a.slug: (a.path_prefix, a.hostname) for a in await session.scalars(select(Api))}
    assert routes == {"a": ("/two", "y.example"), "b": ("/one", "x.example"), "c": ("/three", "")}

    # Only the host names swap: the prefixes stay, and both APIs come back off the parking prefix.
    hosts = await apply(session, settings, program(("/two", "x.example"), ("/two", "y.example"), ("/three", "")))
    assert changed_fields(hosts, "~ update api a") == {"hostname": ("y.example", "x.example")}
    routes = {a.slug: (a.path_prefix, a.hostname) for a in await session.scalars(select(Api))}
    assert routes == {"a": ("/two", "x.example"), "b": ("/two", "y.example"), "c": ("/three", "")}

    # With --prune an API the file drops gives up its route to one the file moves onto it.
    moved = await apply(session, settings, program(("/three", ""), ("/one", "x.example")), prune=True)
    assert summaries(moved) == ["~ update api a", "~ update api b", "- delete api c"]
    routes = {a.slug: (a.path_prefix, a.hostname) for a in await session.scalars(select(Api))}
    assert routes == {"a": ("/three", ""), "b": ("/one", "x.example")}

    # Without --prune the API that stays keeps its route, and the clash is named.
    await apply(session, settings, program(("/three", ""), ("/one", "x.example"), ("/four", "")))
    with pytest.raises(ProgramError) as caught:
        await apply(session, settings, "apis:\n  - {slug: d, name: D, path_prefix: /four, visibility: public}\n")
    [(where, reason)] = caught.value.problems
    assert where == "apis[0].path_prefix" and "'/four'" in reason


async def test_application_states_and_defaults(session: AsyncSession, settings: Settings) -> None:
    program = """
partners:
  - slug: p
    name: P
    type: developer
    audience: public
    status: pending
    members: [{email: Owner@P.example, role: partner-admin}]
    applications:
      - {name: prod, environment: production}
      - {name: box, environment: sandbox, credentials: [{name: k1}, {name: k2, kind: app-key}]}
"""
    first = await apply(session, settings, program)
    assert len(first.secrets) == 2
    states = {a.name: a.state for a in await session.scalars(select(Application))}
    assert states == {"prod": ApplicationState.pending, "box": ApplicationState.live}
    exported = await export_program(session)
    assert exported["partners"][0]["applications"] == [
        {"name": "box", "environment": "sandbox", "credentials": [{"name": "k1"}, {"name": "k2", "kind": "app-key"}]},
        {"name": "prod", "environment": "production"},
    ]
    assert exported["partners"][0]["members"] == [{"email": "owner@p.example", "role": "partner-admin"}]

    live = await apply(session, settings, program.replace("status: pending", "status: active").replace(
        "environment: production}", "environment: production, state: live}"))
    assert changed_fields(live, "~ update application p/prod") == {"state": (ApplicationState.pending, "live")}
    assert changed_fields(live, "~ update partner p") == {"status": (PartnerStatus.pending, "active")}

    with pytest.raises(ProgramError) as back:
        await apply(session, settings, program.replace("status: pending", "status: active"))
    assert back.value.problems == [("partners[0].applications[0].state",
                                    "the application is live; it never goes back to pending")]


async def test_interpolation_and_openapi_files(tmp_path: Path, session: AsyncSession, settings: Settings,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "pets.yaml").write_text("""
openapi: 3.0.3
info: {title: Pets, version: "1"}
paths:
  /pets:
    get: {operationId: listPets, responses: {"200": {description: ok}}}
""")
    (tmp_path / "program.yaml").write_text("""
apis:
  - slug: pets
    name: ${PETS_NAME:-Pets}
    path_prefix: /pets
    visibility: public
    upstreams: {production: "${PETS_UPSTREAM}/v1"}
    openapi: specs/pets.yaml
""")
    monkeypatch.setenv("PETS_UPSTREAM", "https://pets.example")
    monkeypatch.delenv("PETS_NAME", raising=False)
    document = load_document(tmp_path / "program.yaml")
    assert document["apis"][0]["name"] == "Pets"
    assert document["apis"][0]["upstreams"] == {"production": "https://pets.example/v1"}
    assert document["apis"][0]["openapi"]["paths"]["/pets"]["get"]["operationId"] == "listPets"
    await apply(session, settings, document)
    api = await session.scalar(select(Api).where(Api.slug == "pets"))
    assert api.openapi["info"]["title"] == "Pets"
    assert await export_program(session) == document

    monkeypatch.delenv("PETS_UPSTREAM")
    with pytest.raises(ProgramError) as missing:
        load_document(tmp_path / "program.yaml")
    assert missing.value.problems == [("apis[0].upstreams.production", "environment variable PETS_UPSTREAM is not "
                                       "set (write ${PETS_UPSTREAM:-default} to give a default)")]
    (tmp_path / "other.yaml").write_text("apis: [{slug: x, name: X, path_prefix: /x, visibility: open, "
                                         "openapi: missing.yaml}]")
    with pytest.raises(ProgramError) as unreadable:
        load_document(tmp_path / "other.yaml")
    assert unreadable.value.problems[0][0] == "apis[0].openapi"


async def test_mapping_rules_follow_file_order_and_limits_keep_theirs(session: AsyncSession,
                                                                      settings: Settings) -> None:
    program = """
apis:
  - slug: a
    name: A
    path_prefix: /a
    visibility: open
    metrics: [{name: z_last, description: Zed, unit: call}, {name: child, parent: z_last}]
    mapping_rules:
      - {method: GET, pattern: /z, metric: z_last, last: true}
      - {method: get, pattern: /a, metric: child, delta: 2}
products:
  - slug: p
    name: P
    visibility: open
    apis: [a]
    plans:
      - slug: x
        name: X
        limits:
          - {api: a, metric: hits, period: year, value: 3}
          - {api: a, metric: child, period: second, value: 1}
          - {api: a, metric: hits, period: minute, value: 2}
        disabled_methods: [a.z_last]
        pricing: {setup_fee: 10, unit_prices: [{api: a, metric: hits, from_units: 100, unit_price: "0.0015"}]}
"""
    await apply(session, settings, program)
    rules = list(await session.scalars(select(MappingRule).order_by(MappingRule.position)))
    assert [(r.http_method, r.pattern, r.position, r.delta, r.last) for r in rules] == [
        ("GET", "/z", 0, 1, True), ("GET", "/a", 1, 2, False)]
    exported = await export_program(session)
    plan = exported["products"][0]["plans"][0]
    assert [(x["metric"], x["period"]) for x in plan["limits"]] == [("hits", "year"), ("child", "second"),
                                                                      ("hits", "minute")]
    assert plan["pricing"] == {"setup_fee": "10.00",
                               "unit_prices": [{"api": "a", "metric": "hits", "from_units": 100,
                                                "unit_price": "0.0015"}]}
    assert exported["apis"][0]["metrics"] == [{"name": "z_last", "unit": "call", "description": "Zed"},
                                              {"name": "child", "parent": "z_last"}]
    assert (await apply(session, settings, exported)).changes == []
    assert (await apply(session, settings, program)).changes == []
    limits = list(await session.scalars(select(PlanLimit)))
    assert len(limits) == 3
    assert (await session.scalar(select(Plan))).is_default


def test_nul_characters_are_refused_with_their_path() -> None:
    with pytest.raises(ProgramError) as caught:
        parse_document('partners: [{slug: a, name: "A\\0", type: developer, audience: public, status: active}]')
    assert caught.value.problems == [("partners[0].name", "contains a NUL character")]


def test_diff_compares_decimals_and_enums_by_value() -> None:
    from decimal import Decimal

    assert diff({"fee": Decimal("49.000000"), "state": MemberRole.viewer}, {"fee": Decimal("49"),
                                                                           "state": "viewer"}) == []
    assert [f.name for f in diff({"a": [1, 2]}, {"a": [2, 1]})] == ["a"]


async def test_a_literal_dollar_brace_survives_export(session: AsyncSession, settings: Settings) -> None:
    document = parse_document("tiers: [{slug: t, name: T, rank: 1, description: 'costs $${PRICE} a month'}]")
    assert document["tiers"][0]["description"] == "costs ${PRICE} a month"
    await apply(session, settings, document)
    text = dump_program(await export_program(session))
    assert "$${PRICE}" in text
    assert parse_document(text) == document


async def test_a_partner_declared_closed_still_gets_its_subscriptions(session: AsyncSession,
                                                                      settings: Settings) -> None:
    program = """
products:
  - slug: p
    name: P
    visibility: public
    plans: [{slug: basic, name: Basic}]
partners:
  - slug: gone
    name: Gone
    type: developer
    audience: public
    status: closed
    subscriptions: [{product: p, plan: basic}]
"""
    await apply(session, settings, program)
    partner = await session.scalar(select(Partner).where(Partner.slug == "gone"))
    assert partner.status == PartnerStatus.closed
    assert [s.state for s in await session.scalars(select(Subscription))] == [SubscriptionState.active]
    assert (await apply(session, settings, program)).changes == []


async def test_export_leaves_out_values_of_deleted_custom_fields(session: AsyncSession, settings: Settings,
                                                                 factory: Factory) -> None:
    await factory.partner(slug="old", custom_fields={"gone": "x"})
    await apply(session, settings, "custom_fields: [{target: partner, key: kept, label: Kept}]")
    partner = await session.scalar(select(Partner).where(Partner.slug == "old"))
    partner.custom_fields = {"gone": "x", "kept": "y"}
    exported = await export_program(session)
    assert exported["partners"][0]["custom_fields"] == {"kept": "y"}
    # Apply ignores them too (no write could remove or accept them), so the export applies cleanly.
    assert (await apply(session, settings, exported)).changes == []
