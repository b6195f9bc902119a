"""Credentials over real HTTP: shown once, keyed hashes, rotation, revocation, import."""
from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta

import httpx

from accord.apps.models import ApplicationState, Credential, Environment
from accord.core.clock import clock, utcnow
from accord.core.security import keyed_hash
from accord.teams.models import MemberRole
from tests.conftest import TEST_SECRET


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def field_errors(response: httpx.Response) -> dict[str, str]:
    return {e["field"]: e["reason"] for e in response.json().get("errors", [])}


async def developer_app(factory, environment: Environment = Environment.sandbox, **kw):
    """A partner application and the headers of a developer of that partner."""
    partner = await factory.partner()
    _, token = await factory.member(partner, MemberRole.developer)
    app = await factory.application(partner, environment, **kw)
    return f"/api/partners/{partner.id}/applications/{app.id}/credentials", bearer(token), app


async def test_secret_is_shown_once_and_stored_as_a_keyed_hash(anon: httpx.AsyncClient, admin: httpx.AsyncClient,
                                                                session, factory) -> None:
    base, headers, app = await developer_app(factory)
    created = await anon.post(base, json={"name": "server"}, headers=headers)
    assert created.status_code == 201, created.text
    body = created.json()
    secret = body["secret"]
    assert secret.startswith("acc_test_") and len(secret) >= 40
    assert (body["name"], body["kind"], body["prefix"], body["last4"], body["status"]) == \
        ("server", "api-key", "acc_test_", secret[-4:], "active")
    assert "key_hash" not in body

    row = await session.get(Credential, uuid.UUID(body["id"]))
    assert row.key_hash == keyed_hash(secret, TEST_SECRET)
    assert row.key_hash != hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in (row.key_hash, row.prefix, row.name)

    # Never again: not in the list, not in the single read, not in the audit log (nor is the hash).
    readers = [
        await anon.get(base, headers=headers),
        await anon.get(f"{base}/{body['id']}", headers=headers),
        await admin.get(f"/admin/api/applications/{app.id}/credentials"),
        await admin.get(f"/admin/api/applications/{app.id}/credentials/{body['id']}"),
        await admin.get("/admin/api/audit", params={"partner_id": str(app.partner_id)}),
    ]
    for answer in readers:
        assert answer.status_code == 200
        assert secret not in answer.text and secret[len("acc_test_"):] not in answer.text
        assert row.key_hash not in answer.text
        assert '"secret"' not in answer.text and "key_hash" not in answer.text
    listed = readers[0].json()["items"]
    assert [(c["id"], c["last4"], c["status"]) for c in listed] == [(body["id"], secret[-4:], "active")]
    audit = readers[-1].json()["items"]
    assert [e["action"] for e in audit] == ["credential.created"]


async def test_production_prefix_and_app_keys(anon: httpx.AsyncClient, session, factory) -> None:
    base, headers, app = await developer_app(factory, Environment.production)
    created = (await anon.post(base, json={"name": "app key", "kind": "app-key"}, headers=headers)).json()
    assert created["secret"].startswith("acc_live_") and created["prefix"] == "acc_live_"
    assert created["kind"] == "app-key"
    row = await session.get(Credential, uuid.UUID(created["id"]))
    assert row.key_hash == keyed_hash(created["secret"], TEST_SECRET)
    bad_kind = await anon.post(base, json={"name": "x", "kind": "password"}, headers=headers)
    assert bad_kind.status_code == 422 and "kind" in field_errors(bad_kind)


async def test_several_named_credentials_at_once(anon: httpx.AsyncClient, factory) -> None:
    base, headers, _ = await developer_app(factory)
    secrets = set()
    for name in ("web", "batch", "web"):
        answer = await anon.post(base, json={"name": name}, headers=headers)
        assert answer.status_code == 201
        secrets.add(answer.json()["secret"])
    assert len(secrets) == 3
    listed = (await anon.get(base, headers=headers)).json()
    assert listed["total"] == 3 and {c["status"] for c in listed["items"]} == {"active"}
    assert sorted(c["name"] for c in listed["items"]) == ["batch", "web", "web"]
    assert (await anon.post(base, json={"name": "  "}, headers=headers)).status_code == 422


async def test_expiry_must_be_in_the_future_and_shows_in_the_status(anon: httpx.AsyncClient, factory) -> None:
    base, headers, _ = await developer_app(factory)
    past = await anon.post(base, json={"name": "x", "expires_at": (utcnow() - timedelta(minutes=1)).isoformat()},
                           headers=headers)
    assert past.status_code == 422 and field_errors(past) == {"expires_at": "must be in the future"}
    naive = await anon.post(base, json={"name": "x", "expires_at": "2999-01-01T00:00:00"}, headers=headers)
    assert naive.status_code == 422 and "expires_at" in field_errors(naive)

    start = utcnow().replace(microsecond=0)
    clock.freeze(start)
    try:
        soon = (await anon.post(base, json={"name": "soon", "expires_at": (start + timedelta(days=2)).isoformat()},
                                headers=headers)).json()
        later = (await anon.post(base, json={"name": "later",
                                             "expires_at": (start + timedelta(days=60)).isoformat()},
                                 headers=headers)).json()
        assert (soon["status"], later["status"]) == ("expiring", "active")
        assert datetime.fromisoformat(soon["expires_at"]) == start + timedelta(days=2)
    finally:
        clock.resume()


async def test_rotation_keeps_both_valid_until_the_chosen_time(anon: httpx.AsyncClient, admin: httpx.AsyncClient,
                                                               session, factory) -> None:
    base, headers, app = await developer_app(factory)
    start = utcnow().replace(microsecond=0)
    cutover = start + timedelta(hours=2)
    clock.freeze(start)
    try:
        old = (await anon.post(base, json={"name": "main", "kind": "app-key"}, headers=headers)).json()
        in_past = await anon.post(f"{base}/{old['id']}/rotate",
                                  json={"expire_old_at": (start - timedelta(seconds=1)).isoformat()}, headers=headers)
        assert in_past.status_code == 422 and list(field_errors(in_past)) == ["expire_old_at"]

        rotated = await anon.post(f"{base}/{old['id']}/rotate", json={"expire_old_at": cutover.isoformat()},
                                  headers=headers)
        assert rotated.status_code == 201, rotated.text
        new = rotated.json()
        assert new["secret"].startswith("acc_test_") and new["secret"] != old["secret"]
        assert (new["name"], new["kind"], new["rotated_from_id"], new["status"], new["expires_at"]) == \
            ("main", "app-key", old["id"], "active", None)
        row = await session.get(Credential, uuid.UUID(new["id"]))
        assert row.key_hash == keyed_hash(new["secret"], TEST_SECRET)

        async def statuses() -> dict[str, str]:
            items = (await anon.get(base, headers=headers)).json()["items"]
            return {c["id"]: c["status"] for c in items}

        old_now = (await anon.get(f"{base}/{old['id']}", headers=headers)).json()
        assert datetime.fromisoformat(old_now["expires_at"]) == cutover
        assert await statuses() == {old["id"]: "expiring", new["id"]: "active"}

        clock.freeze(cutover - timedelta(seconds=1))
        assert await statuses() == {old["id"]: "expiring", new["id"]: "active"}

        clock.freeze(cutover)
        assert await statuses() == {old["id"]: "expired", new["id"]: "active"}
        # An expired credential cannot be rotated, nor can one already rotated.
        assert (await anon.post(f"{base}/{old['id']}/rotate", headers=headers)).status_code == 409
    finally:
        clock.resume()

    audit = (await admin.get("/admin/api/audit", params={"partner_id": str(app.partner_id)})).json()["items"]
    assert [e["action"] for e in audit] == ["credential.rotated", "credential.superseded", "credential.created"]
    assert old["secret"] not in str(audit) and new["secret"] not in str(audit)


async def test_rotation_defaults_to_a_day_and_never_extends_an_expiry(anon: httpx.AsyncClient, factory) -> None:
    base, headers, _ = await developer_app(factory)
    start = utcnow().replace(microsecond=0)
    clock.freeze(start)
    try:
        plain = (await anon.post(base, json={"name": "plain"}, headers=headers)).json()
        rotated = await anon.post(f"{base}/{plain['id']}/rotate", headers=headers)
        assert rotated.status_code == 201
        old = (await anon.get(f"{base}/{plain['id']}", headers=headers)).json()
        assert datetime.fromisoformat(old["expires_at"]) == start + timedelta(hours=24)
        again = await anon.post(f"{base}/{plain['id']}/rotate", headers=headers)
        assert again.status_code == 409 and again.json()["type"] == "/problems/invalid-state"

        short = (await anon.post(base, json={"name": "short", "expires_at": (start + timedelta(hours=1)).isoformat()},
                                 headers=headers)).json()
        await anon.post(f"{base}/{short['id']}/rotate",
                        json={"expire_old_at": (start + timedelta(days=3)).isoformat()}, headers=headers)
        kept = (await anon.get(f"{base}/{short['id']}", headers=headers)).json()
        assert datetime.fromisoformat(kept["expires_at"]) == start + timedelta(hours=1)
    finally:
        clock.resume()


async def test_revoke_is_immediate(anon: httpx.AsyncClient, admin: httpx.AsyncClient, factory) -> None:
    base, headers, app = await developer_app(factory)
    cred, _ = await factory.credential(app)
    other, _ = await factory.credential(app, name="other")
    before = utcnow()
    revoked = await anon.post(f"{base}/{cred.id}/revoke", headers=headers)
    assert revoked.status_code == 200
    assert revoked.json()["status"] == "revoked"
    assert before <= datetime.fromisoformat(revoked.json()["revoked_at"]) <= utcnow()
    statuses = {c["id"]: c["status"] for c in (await anon.get(base, headers=headers)).json()["items"]}
    assert statuses == {str(cred.id): "revoked", str(other.id): "active"}

    again = await anon.post(f"{base}/{cred.id}/revoke", headers=headers)
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]
    assert (await anon.post(f"{base}/{cred.id}/rotate", headers=headers)).status_code == 409
    by_staff = await admin.post(f"/admin/api/applications/{app.id}/credentials/{other.id}/revoke")
    assert by_staff.json()["status"] == "revoked"
    actions = [e["action"] for e in (await admin.get("/admin/api/audit", params={"target_id": str(cred.id)})).json()[
        "items"]]
    assert actions == ["credential.revoked"]


async def test_suspended_application_gets_no_new_credentials(anon: httpx.AsyncClient, factory) -> None:
    base, headers, app = await developer_app(factory, state=ApplicationState.suspended)
    cred, _ = await factory.credential(app)
    refused = await anon.post(base, json={"name": "x"}, headers=headers)
    assert refused.status_code == 409 and refused.json()["type"] == "/problems/invalid-state"
    assert (await anon.post(f"{base}/{cred.id}/rotate", headers=headers)).status_code == 409
    assert (await anon.post(f"{base}/{cred.id}/revoke", headers=headers)).status_code == 200


async def test_staff_create_and_import_existing_keys(admin: httpx.AsyncClient, session, factory) -> None:
    partner = await factory.partner()
    app = await factory.application(partner)
    base = f"/admin/api/applications/{app.id}/credentials"
    created = await admin.post(base, json={"name": "by staff"})
    assert created.status_code == 201 and created.json()["secret"].startswith("acc_test_")

    legacy = "3f9c2a7b5e1d4c8a9b0e6f2d7c1a5b3e"
    imported = await admin.post(f"{base}/import", json={"name": "from 3scale", "secret": legacy})
    assert imported.status_code == 201, imported.text
    body = imported.json()
    assert (body["imported"], body["last4"], body["prefix"], body["status"]) == (True, "5b3e", "", "active")
    assert "secret" not in body and legacy not in imported.text
    row = await session.get(Credential, uuid.UUID(body["id"]))
    assert row.key_hash == keyed_hash(legacy, TEST_SECRET) and row.imported is True

    duplicate = await admin.post(f"{base}/import", json={"name": "again", "secret": legacy})
    assert duplicate.status_code == 409 and list(field_errors(duplicate)) == ["secret"]
    other_app = await factory.application(partner)
    elsewhere = await admin.post(f"/admin/api/applications/{other_app.id}/credentials/import",
                                 json={"name": "again", "secret": legacy})
    assert elsewhere.status_code == 409

    wrong_env = await admin.post(f"{base}/import", json={"name": "live", "secret": "acc_live_" + "a" * 40})
    assert wrong_env.status_code == 422 and "production key" in field_errors(wrong_env)["secret"]
    own_env = await admin.post(f"{base}/import", json={"name": "test", "secret": "acc_test_" + "b" * 40})
    assert own_env.status_code == 201 and own_env.json()["prefix"] == "acc_test_"
    too_short = await admin.post(f"{base}/import", json={"name": "short", "secret": "abc"})
    assert too_short.status_code == 422 and "secret" in field_errors(too_short)

    audit = await admin.get("/admin/api/audit", params={"target_id": body["id"]})
    assert audit.json()["items"][0]["action"] == "credential.imported"
    assert legacy not in audit.text and row.key_hash not in audit.text


async def test_import_service_function(session, factory, settings) -> None:
    """The function the CLI import uses, called as the CLI would."""
    from accord.apps.service import import_credential
    from accord.auth.actor import CLI_ACTOR
    from accord.core.errors import ProblemError

    app = await factory.application(await factory.partner(), Environment.production)
    credential = await import_credential(session, CLI_ACTOR, app, "acc_live_" + "Z" * 40, "migrated",
                                         settings.secret_key)
    assert credential.imported and credential.prefix == "acc_live_" and credential.last4 == "ZZZZ"
    assert credential.key_hash == keyed_hash("acc_live_" + "Z" * 40, TEST_SECRET)
    try:
        await import_credential(session, CLI_ACTOR, app, "acc_live_" + "Z" * 40, "twice", settings.secret_key)
    except ProblemError as error:
        assert error.slug == "conflict" and error.errors[0]["field"] == "secret"
    else:
        raise AssertionError("importing the same key twice must conflict")
