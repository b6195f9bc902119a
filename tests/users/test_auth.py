"""The partner API's people routes over real HTTP: sign-up, login, logout and `/api/me`."""
from __future__ import annotations

import json
import uuid

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.catalog.models import Visibility
from accord.core.config import Settings
from accord.core.security import keyed_hash
from accord.partners.models import Partner
from accord.subscriptions.models import Subscription
from accord.teams.models import MemberRole, Membership
from accord.users.models import User, UserSession
from tests.factories import PASSWORD, Factory

NEW_PASSWORD = "a brand new passphrase"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _signup(**kw: object) -> dict[str, object]:
    body: dict[str, object] = {"email": "Dana@Example.com", "name": "Dana Dev", "password": "long enough pw",
                               "organisation": "Acme Labs"}
    body.update(kw)
    return body


async def _fresh(session: AsyncSession, model: type, **where: object) -> object:
    """A row as the database has it now (the app wrote it through its own session)."""
    stmt = select(model).filter_by(**where).execution_options(populate_existing=True)
    return await session.scalar(stmt)


async def test_signup_creates_account_partner_admin_membership_defaults_and_session(
        anon: httpx.AsyncClient, factory: Factory, session: AsyncSession) -> None:
    upper = await factory.tier("Gold", rank=50)
    entry = await factory.tier("Registered", rank=5)
    public_product = await factory.product(visibility=Visibility.public)
    default_plan = await factory.plan(public_product, is_default=True)
    partner_only = await factory.product(visibility=Visibility.partner)
    await factory.plan(partner_only, is_default=True)

    answer = await anon.post("/api/auth/signup", json=_signup(partner_type="agency"))
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["token"].startswith("acc_sess_")
    assert body["user"]["email"] == "dana@example.com"
    assert body["user"]["staff_role"] is None
    [membership] = body["user"]["memberships"]
    assert membership["partner_name"] == "Acme Labs" and membership["partner_slug"] == "acme-labs"
    assert membership["role"] == "partner-admin"

    partner = await _fresh(session, Partner, id=uuid.UUID(membership["partner_id"]))
    assert partner.audience == "public" and partner.status == "active" and partner.type == "agency"
    assert partner.tier_id == entry.id != upper.id
    assert partner.contact_email == "dana@example.com"
    subscriptions = list(await session.scalars(select(Subscription).where(Subscription.partner_id == partner.id)))
    # Only the product a public partner may see; its default plan.
    assert [s.plan_id for s in subscriptions] == [default_plan.id]

    user = await _fresh(session, User, email="dana@example.com")
    assert user.password_hash.startswith("$argon2") and "long enough pw" not in user.password_hash
    me = await anon.get("/api/me", headers=bearer(body["token"]))
    assert me.status_code == 200 and me.json()["memberships"] == [membership]


async def test_signup_defaults_to_a_developer_partner_and_slugs_never_collide(anon: httpx.AsyncClient) -> None:
    first = (await anon.post("/api/auth/signup", json=_signup())).json()
    second = await anon.post("/api/auth/signup", json=_signup(email="eve@example.com"))
    assert second.status_code == 201, second.text
    assert second.json()["user"]["memberships"][0]["partner_slug"] == "acme-labs-2"
    assert first["user"]["memberships"][0]["partner_slug"] == "acme-labs"
    assert first["user"]["id"] != second.json()["user"]["id"]


async def test_signup_refuses_taken_email_in_any_case_and_bad_input(anon: httpx.AsyncClient,
                                                                      factory: Factory) -> None:
    await factory.user("dana@example.com")
    taken = await anon.post("/api/auth/signup", json=_signup(email="DANA@example.com"))
    assert taken.status_code == 409
    assert taken.json()["errors"] == [{"field": "email", "reason": "an account with this email already exists"}]

    bad = await anon.post("/api/auth/signup", json=_signup(email="not-an-email", password="short",
                                                           partner_type="spaceship", organisation=""))
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"email", "password", "partner_type", "organisation"}
    extra = await anon.post("/api/auth/signup", json=_signup(staff_role="owner"))
    assert extra.status_code == 422 and extra.json()["errors"][0]["field"] == "staff_role"


async def test_signup_checks_user_custom_fields(anon: httpx.AsyncClient, admin: httpx.AsyncClient) -> None:
    for field in ({"target": "user", "key": "github", "label": "GitHub", "required": True},
                  {"target": "user", "key": "score", "label": "Score", "type": "number", "hidden": True}):
        assert (await admin.post("/admin/api/custom-fields", json=field)).status_code == 201

    missing = await anon.post("/api/auth/signup", json=_signup())
    assert missing.status_code == 422
    assert missing.json()["errors"] == [{"field": "custom_fields.github", "reason": "is required"}]
    hidden = await anon.post("/api/auth/signup", json=_signup(custom_fields={"github": "dana", "score": 9}))
    assert hidden.status_code == 422
    assert hidden.json()["errors"] == [{"field": "custom_fields.score", "reason": "no such custom field"}]

    ok = await anon.post("/api/auth/signup", json=_signup(custom_fields={"github": "dana"}))
    assert ok.status_code == 201, ok.text
    assert ok.json()["user"]["custom_fields"] == {"github": "dana"}


async def test_login_gives_a_working_session_and_one_answer_for_every_failure(
        anon: httpx.AsyncClient, factory: Factory, session: AsyncSession) -> None:
    user = await factory.user("ann@example.com")
    inactive = await factory.user("ina@example.com")
    inactive.is_active = False
    await session.flush()

    ok = await anon.post("/api/auth/login", json={"email": "ANN@example.com", "password": PASSWORD})
    assert ok.status_code == 200, ok.text
    assert ok.json()["user"]["id"] == str(user.id) and ok.json()["user"]["last_login_at"] is not None
    me = await anon.get("/api/me", headers=bearer(ok.json()["token"]))
    assert me.status_code == 200 and me.json()["email"] == "ann@example.com"

    failures = [
        {"email": "ann@example.com", "password": "wrong password!"},
        {"email": "nobody@example.com", "password": PASSWORD},
        {"email": "ina@example.com", "password": PASSWORD},
    ]
    answers = [await anon.post("/api/auth/login", json=body) for body in failures]
    assert {a.status_code for a in answers} == {401}
    assert {a.headers["content-type"] for a in answers} == {"application/problem+json"}
    assert len({a.text for a in answers}) == 1
    assert answers[0].json()["type"] == "/problems/unauthenticated"


async def test_logout_ends_only_the_current_session(anon: httpx.AsyncClient, factory: Factory) -> None:
    user = await factory.user()
    first = await factory.session_token(user)
    second = await factory.session_token(user)
    assert (await anon.post("/api/auth/logout", headers=bearer(first))).status_code == 204
    assert (await anon.get("/api/me", headers=bearer(first))).status_code == 401
    assert (await anon.get("/api/me", headers=bearer(second))).status_code == 200
    assert (await anon.post("/api/auth/logout")).status_code == 401


async def test_me_lists_memberships_with_partner_and_role(anon: httpx.AsyncClient, factory: Factory) -> None:
    beta = await factory.partner(name="Beta", slug="beta")
    alpha = await factory.partner(name="Alpha", slug="alpha")
    user, token = await factory.member(beta, MemberRole.viewer)
    await factory.member(alpha, MemberRole.developer, user=user)
    me = (await anon.get("/api/me", headers=bearer(token))).json()
    assert me["memberships"] == [
        {"partner_id": str(alpha.id), "partner_name": "Alpha", "partner_slug": "alpha", "role": "developer"},
        {"partner_id": str(beta.id), "partner_name": "Beta", "partner_slug": "beta", "role": "viewer"},
    ]
    assert "password_hash" not in me and "is_active" not in me
    assert (await anon.get("/api/me")).status_code == 401
    assert (await anon.get("/api/me", headers=bearer("acc_sess_nope"))).status_code == 401


async def test_change_name_and_password(anon: httpx.AsyncClient, factory: Factory) -> None:
    user = await factory.user("pat@example.com")
    token = await factory.session_token(user)
    other_device = await factory.session_token(user)

    renamed = await anon.patch("/api/me", headers=bearer(token), json={"name": "Pat Q"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Pat Q"

    without = await anon.patch("/api/me", headers=bearer(token), json={"password": NEW_PASSWORD})
    assert without.status_code == 422 and without.json()["errors"][0]["field"] == "current_password"
    wrong = await anon.patch("/api/me", headers=bearer(token),
                             json={"password": NEW_PASSWORD, "current_password": "not it at all"})
    assert wrong.status_code == 422 and wrong.json()["errors"][0] == {"field": "current_password",
                                                                       "reason": "is wrong"}
    short = await anon.patch("/api/me", headers=bearer(token), json={"password": "short", "current_password": PASSWORD})
    assert short.status_code == 422 and short.json()["errors"][0]["field"] == "password"
    assert (await anon.patch("/api/me", headers=bearer(token), json={"email": "x@example.com"})).status_code == 422

    changed = await anon.patch("/api/me", headers=bearer(token),
                               json={"password": NEW_PASSWORD, "current_password": PASSWORD})
    assert changed.status_code == 200, changed.text
    # This session goes on; every other one ends with the old password.
    assert (await anon.get("/api/me", headers=bearer(token))).status_code == 200
    assert (await anon.get("/api/me", headers=bearer(other_device))).status_code == 401
    old = await anon.post("/api/auth/login", json={"email": "pat@example.com", "password": PASSWORD})
    assert old.status_code == 401
    new = await anon.post("/api/auth/login", json={"email": "pat@example.com", "password": NEW_PASSWORD})
    assert new.status_code == 200


async def test_me_custom_fields_hide_staff_only_values(anon: httpx.AsyncClient, admin: httpx.AsyncClient,
                                                       factory: Factory, session: AsyncSession) -> None:
    for field in ({"target": "user", "key": "github", "label": "GitHub"},
                  {"target": "user", "key": "risk", "label": "Risk", "hidden": True}):
        assert (await admin.post("/admin/api/custom-fields", json=field)).status_code == 201
    user = await factory.user()
    user.custom_fields = {"risk": "high"}
    await session.flush()
    token = await factory.session_token(user)

    assert (await anon.get("/api/me", headers=bearer(token))).json()["custom_fields"] == {}
    set_hidden = await anon.patch("/api/me", headers=bearer(token), json={"custom_fields": {"risk": "low"}})
    assert set_hidden.status_code == 422
    assert set_hidden.json()["errors"] == [{"field": "custom_fields.risk", "reason": "no such custom field"}]
    ok = await anon.patch("/api/me", headers=bearer(token), json={"custom_fields": {"github": "pat"}})
    assert ok.status_code == 200 and ok.json()["custom_fields"] == {"github": "pat"}
    stored = await _fresh(session, User, id=user.id)
    assert stored.custom_fields == {"risk": "high", "github": "pat"}


async def test_no_answer_or_audit_entry_carries_a_password_or_token_hash(
        anon: httpx.AsyncClient, admin: httpx.AsyncClient, session: AsyncSession, settings: Settings) -> None:
    signup = await anon.post("/api/auth/signup", json=_signup())
    token = signup.json()["token"]
    login = await anon.post("/api/auth/login", json={"email": "dana@example.com", "password": "long enough pw"})
    changed = await anon.patch("/api/me", headers=bearer(token),
                               json={"password": NEW_PASSWORD, "current_password": "long enough pw"})
    logout = await anon.post("/api/auth/logout", headers=bearer(token))
    assert [signup.status_code, login.status_code, changed.status_code, logout.status_code] == [201, 200, 200, 204]

    user = await _fresh(session, User, email="dana@example.com")
    hashes = [user.password_hash] + [s.token_hash for s in await session.scalars(
        select(UserSession).where(UserSession.user_id == user.id))]
    assert keyed_hash(token, settings.secret_key) in hashes
    audit = (await admin.get("/admin/api/audit", params={"limit": 200})).json()["items"]
    actions = {e["action"] for e in audit}
    assert {"user.created", "partner.created", "membership.created", "user.logged_in", "user.updated",
            "user.logged_out"} <= actions
    assert next(e for e in audit if e["action"] == "user.updated")["after"]["password_changed"] is True
    texts = [signup.text, login.text, changed.text, json.dumps(audit),
             (await admin.get(f"/admin/api/users/{user.id}")).text]
    for text in texts:
        assert "password_hash" not in text and "token_hash" not in text and "$argon2" not in text
        assert not any(h in text for h in hashes)
    # The session token itself appears only in the answer that created it.
    assert token not in json.dumps(audit) and token not in login.text
    memberships = await session.scalar(select(Membership).where(Membership.user_id == user.id))
    assert memberships.role == MemberRole.partner_admin
