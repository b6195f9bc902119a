"""The webhook admin and partner APIs over real HTTP, on SQLite and PostgreSQL."""
from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select

from accord.audit.models import AuditEntry
from accord.teams.models import MemberRole
from accord.users.models import StaffRole
from accord.webhooks.models import WebhookSecret

ENDPOINTS = "/admin/api/webhooks/endpoints"


def _client(base_url: str, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=30, headers={"Authorization": f"Bearer {token}"})


async def test_register_read_change_and_delete_a_provider_endpoint(admin: httpx.AsyncClient, session) -> None:
    created = await admin.post(ENDPOINTS, json={"url": "https://hooks.example.com/accord/", "description": "CRM",
                                                "event_types": ["partner.created", "partner.updated",
                                                                "partner.created"]})
    assert created.status_code == 201, created.text
    endpoint = created.json()
    secret = endpoint.pop("secret")
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/=]{40,}", secret)
    assert endpoint["url"] == "https://hooks.example.com/accord/"  # kept exactly as given
    assert endpoint["event_types"] == ["partner.created", "partner.updated"]
    assert endpoint["partner_id"] is None and endpoint["enabled"] is True
    assert [s["last4"] for s in endpoint["signing_secrets"]] == [secret[-4:]]

    got = await admin.get(f"{ENDPOINTS}/{endpoint['id']}")
    assert got.json() == endpoint and secret not in got.text
    listed = (await admin.get(ENDPOINTS, params={"owner": "provider"})).json()
    assert [e["id"] for e in listed["items"]] == [endpoint["id"]]
    assert (await admin.get(ENDPOINTS, params={"owner": "partner"})).json()["total"] == 0

    patched = await admin.patch(f"{ENDPOINTS}/{endpoint['id']}", json={"event_types": [], "enabled": False})
    assert patched.status_code == 200, patched.text
    assert patched.json()["event_types"] == [] and patched.json()["enabled"] is False
    assert (await admin.get(ENDPOINTS, params={"enabled": "false"})).json()["total"] == 1

    # The audit trail records every change and never a secret.
    audit = (await admin.get("/admin/api/audit", params={"target_id": endpoint["id"]})).json()["items"]
    assert [e["action"] for e in audit] == ["webhook_endpoint.updated", "webhook_endpoint.created"]
    sealed = (await session.scalars(select(WebhookSecret.sealed))).all()
    for entry in (await session.scalars(select(AuditEntry))).all():
        text = str(entry.before) + str(entry.after)
        assert secret not in text and not any(s in text for s in sealed)

    assert (await admin.delete(f"{ENDPOINTS}/{endpoint['id']}")).status_code == 204
    assert (await admin.get(f"{ENDPOINTS}/{endpoint['id']}")).status_code == 404


async def test_invalid_endpoints_are_refused_naming_the_field(admin: httpx.AsyncClient) -> None:
    async def refused(body: dict) -> list[dict]:
        response = await admin.post(ENDPOINTS, json={"url": "https://hooks.example.com", **body})
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        return response.json()["errors"]

    assert (await refused({"url": "ftp://hooks.example.com"}))[0] == {"field": "url",
                                                                     "reason": "must be an https:// URL"}
    assert (await refused({"url": "http://hooks.example.com"}))[0]["field"] == "url"  # http is off by default
    assert "private" in (await refused({"url": "https://10.0.0.7/hook"}))[0]["reason"]
    assert "loopback" in (await refused({"url": "https://127.0.0.1:8443/hook"}))[0]["reason"]
    assert "link-local" in (await refused({"url": "https://169.254.169.254/latest"}))[0]["reason"]
    assert (await refused({"event_types": ["partner.created", "nope"]})) == [
        {"field": "event_types.1", "reason": "unknown event type 'nope'; see /event-types"}]
    assert (await refused({"secret": "whsec_mine"}))[0]["field"] == "secret"  # unknown fields are refused

    first = await admin.post(ENDPOINTS, json={"url": "https://hooks.example.com/a"})
    assert first.status_code == 201
    duplicate = await admin.post(ENDPOINTS, json={"url": "https://hooks.example.com/a"})
    assert duplicate.status_code == 409 and duplicate.json()["errors"][0]["field"] == "url"
    nulled = await admin.patch(f"{ENDPOINTS}/{first.json()['id']}", json={"url": None})
    assert nulled.status_code == 422 and nulled.json()["errors"][0]["field"] == "url"


async def test_an_owner_has_at_most_twenty_endpoints(admin: httpx.AsyncClient) -> None:
    for n in range(20):
        assert (await admin.post(ENDPOINTS, json={"url": f"https://hooks.example.com/{n}"})).status_code == 201
    refused = await admin.post(ENDPOINTS, json={"url": "https://hooks.example.com/21"})
    assert refused.status_code == 409 and refused.json()["type"] == "/problems/invalid-state"


async def test_staff_roles_writes_need_owner_or_admin(admin: httpx.AsyncClient, factory, base_url: str) -> None:
    created = (await admin.post(ENDPOINTS, json={"url": "https://hooks.example.com"})).json()
    for role in (StaffRole.viewer, StaffRole.partner_manager):
        async with _client(base_url, await factory.admin_token(role)) as client:
            assert (await client.get(f"{ENDPOINTS}/{created['id']}")).status_code == 200
            assert (await client.get("/admin/api/webhooks/deliveries")).status_code == 200
            refused = await client.post(ENDPOINTS, json={"url": "https://hooks.example.com/x"})
            assert refused.status_code == 403, refused.text
            assert (await client.delete(f"{ENDPOINTS}/{created['id']}")).status_code == 403
    async with _client(base_url, await factory.admin_token(StaffRole.admin)) as client:
        assert (await client.post(ENDPOINTS, json={"url": "https://hooks.example.com/y"})).status_code == 201


async def test_rotation_answers_the_new_secret_once_and_lists_the_overlap(admin: httpx.AsyncClient) -> None:
    created = (await admin.post(ENDPOINTS, json={"url": "https://hooks.example.com"})).json()
    rotate = f"{ENDPOINTS}/{created['id']}/rotate-secret"
    for bad in ({"overlap_hours": -1}, {"overlap_hours": 169}, {"overlap_hours": "soon"}):
        response = await admin.post(rotate, json=bad)
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == "overlap_hours"
    rotated = await admin.post(rotate, json={"overlap_hours": 48})
    assert rotated.status_code == 201, rotated.text
    body = rotated.json()
    assert body["secret"] != created["secret"] and body["id"] == created["id"]
    [new, old] = body["signing_secrets"]
    assert new["last4"] == body["secret"][-4:] and new["expires_at"] is None
    expires = datetime.fromisoformat(old["expires_at"].replace("Z", "+00:00"))
    assert timedelta(hours=47) < expires - datetime.now(UTC) <= timedelta(hours=48)
    assert body["secret"] not in (await admin.get(f"{ENDPOINTS}/{created['id']}")).text

    at_once = (await admin.post(rotate, json={"overlap_hours": 0})).json()
    assert [s["last4"] for s in at_once["signing_secrets"]] == [at_once["secret"][-4:]]

    default = (await admin.post(rotate)).json()  # no body: a day's overlap
    [_, previous] = default["signing_secrets"]
    expires = datetime.fromisoformat(previous["expires_at"].replace("Z", "+00:00"))
    assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(hours=24)


async def test_replay_and_redelivery_create_deliveries_and_the_lists_filter(admin: httpx.AsyncClient) -> None:
    since = datetime.now(UTC) - timedelta(seconds=5)
    for slug in ("one", "two"):
        assert (await admin.post("/admin/api/partners", json={"name": slug, "slug": slug,
                                                              "type": "technology"})).status_code == 201
    everything = (await admin.post(ENDPOINTS, json={"url": "https://hooks.example.com/all"})).json()
    updates = (await admin.post(ENDPOINTS, json={"url": "https://hooks.example.com/upd",
                                                 "event_types": ["partner.updated"]})).json()

    replayed = await admin.post(f"{ENDPOINTS}/{everything['id']}/replay", json={"since": since.isoformat()})
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["deliveries_created"] == 2
    none = await admin.post(f"{ENDPOINTS}/{updates['id']}/replay", json={"since": since.isoformat()})
    assert none.json()["deliveries_created"] == 0

    deliveries = (await admin.get("/admin/api/webhooks/deliveries")).json()
    assert deliveries["total"] == 2
    assert {(d["kind"], d["status"], d["event_type"], d["attempts"]) for d in deliveries["items"]} == {
        ("replay", "pending", "partner.created", 0)}
    one = deliveries["items"][0]
    again = await admin.post(f"/admin/api/webhooks/deliveries/{one['id']}/redeliver")
    assert again.status_code == 201 and again.json()["event_id"] == one["event_id"]

    async def count(**params: str) -> int:
        return (await admin.get("/admin/api/webhooks/deliveries", params=params)).json()["total"]

    assert await count(endpoint_id=everything["id"]) == 3
    assert await count(endpoint_id=updates["id"]) == 0
    assert await count(event_type="partner.created") == 3 and await count(event_type="partner.updated") == 0
    assert await count(event_id=one["event_id"]) == 2
    assert await count(status="pending") == 3 and await count(status="succeeded") == 0
    bad = await admin.get("/admin/api/webhooks/deliveries", params={"status": "lost"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "query.status"

    backwards = await admin.post(f"{ENDPOINTS}/{everything['id']}/replay",
                                 json={"since": datetime.now(UTC).isoformat(), "until": since.isoformat()})
    assert backwards.status_code == 422 and backwards.json()["errors"][0]["field"] == "since"
    naive = await admin.post(f"{ENDPOINTS}/{everything['id']}/replay", json={"since": "2024-01-01T00:00:00"})
    assert naive.status_code == 422 and naive.json()["errors"][0]["field"] == "since"
    unknown = await admin.post(f"{ENDPOINTS}/{everything['id']}/redeliver", json={"event_id": "evt_nope"})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "event_id"


async def test_the_disabled_event_is_in_the_catalog(admin: httpx.AsyncClient) -> None:
    described = await admin.get("/admin/api/event-types/webhook_endpoint.disabled")
    assert described.status_code == 200
    fields = described.json()["payload_schema"]["properties"]["data"]["properties"]["object"]["properties"]
    assert {"url", "enabled", "disabled_reason", "partner_id"} <= set(fields)
    assert not any("secret" in name or "sealed" in name for name in fields)


# --- partners -------------------------------------------------------------------

async def test_partners_manage_their_own_endpoints(factory, base_url: str, admin: httpx.AsyncClient) -> None:
    partner = await factory.partner()
    _, partner_admin = await factory.member(partner, MemberRole.partner_admin)
    _, developer = await factory.member(partner, MemberRole.developer)
    _, viewer = await factory.member(partner, MemberRole.viewer)
    provider = (await admin.post(ENDPOINTS, json={"url": "https://hooks.example.com/provider"})).json()
    base = f"/api/partners/{partner.id}/webhooks"

    async with _client(base_url, partner_admin) as client:
        created = await client.post(f"{base}/endpoints", json={"url": "https://partner.example.com/hook",
                                                               "event_types": ["application.created"]})
        assert created.status_code == 201, created.text
        endpoint = created.json()
        assert endpoint["partner_id"] == str(partner.id) and endpoint["secret"].startswith("whsec_")
        listed = (await client.get(f"{base}/endpoints")).json()
        assert [e["id"] for e in listed["items"]] == [endpoint["id"]]  # never the provider's endpoints
        assert (await client.get(f"{base}/endpoints/{provider['id']}")).status_code == 404
        rotated = await client.post(f"{base}/endpoints/{endpoint['id']}/rotate-secret", json={"overlap_hours": 1})
        assert rotated.status_code == 201
        patched = await client.patch(f"{base}/endpoints/{endpoint['id']}", json={"description": "ours"})
        assert patched.json()["description"] == "ours"
        refused = await client.post(f"{base}/endpoints", json={"url": "https://192.168.1.10/hook"})
        assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "url"

    for token in (developer, viewer):
        async with _client(base_url, token) as client:
            assert (await client.get(f"{base}/endpoints/{endpoint['id']}")).status_code == 200
            assert (await client.get(f"{base}/deliveries")).status_code == 200
            assert (await client.get(f"{base}/attempts")).status_code == 200
            assert (await client.post(f"{base}/endpoints", json={"url": "https://p.example.com/2"})).status_code == 403
            assert (await client.delete(f"{base}/endpoints/{endpoint['id']}")).status_code == 403

    staff_view = (await admin.get(ENDPOINTS, params={"partner_id": str(partner.id)})).json()
    assert [e["id"] for e in staff_view["items"]] == [endpoint["id"]]
    async with _client(base_url, partner_admin) as client:
        assert (await client.delete(f"{base}/endpoints/{endpoint['id']}")).status_code == 204


async def test_partner_routes_never_reveal_another_partners_webhooks(factory, base_url: str,
                                                                     admin: httpx.AsyncClient) -> None:
    """Every partner webhook route, called by A's admin with B's ids (or B's partner id), answers 404."""
    since = datetime.now(UTC) - timedelta(seconds=5)
    parties = {}
    for name in ("a", "b"):
        partner = await factory.partner()
        _, token = await factory.member(partner, MemberRole.partner_admin)
        async with _client(base_url, token) as client:
            endpoint = (await client.post(f"/api/partners/{partner.id}/webhooks/endpoints",
                                          json={"url": f"https://{name}.example.com/hook"})).json()
        changed = await admin.patch(f"/admin/api/partners/{partner.id}", json={"notes": f"for {name}"})
        assert changed.status_code == 200
        replay = await admin.post(f"{ENDPOINTS}/{endpoint['id']}/replay", json={"since": since.isoformat()})
        assert replay.json()["deliveries_created"] == 1
        delivery = (await admin.get("/admin/api/webhooks/deliveries",
                                    params={"endpoint_id": endpoint["id"]})).json()["items"][0]
        parties[name] = {"partner_id": str(partner.id), "endpoint_id": endpoint["id"], "delivery_id": delivery["id"],
                         "event_id": delivery["event_id"], "token": token}
    a, b = parties["a"], parties["b"]

    app = (await admin.get("/openapi.json")).json()
    routes = [(method.upper(), path) for path, item in app["paths"].items()
              if path.startswith("/api/partners/{partner_id}/webhooks") for method in item]
    assert len(routes) >= 12
    bodies = {"/endpoints": {"url": "https://mallory.example.com"}, "/rotate-secret": {"overlap_hours": 0},
              "/redeliver": {"event_id": a["event_id"]}, "/replay": {"since": since.isoformat()},
              "/endpoints/{endpoint_id}": {"description": "mallory"}}
    wrong = []
    async with _client(base_url, a["token"]) as client:
        for method, path in routes:
            body = next((v for k, v in bodies.items() if path.endswith(k)), None)
            body = body if method in {"POST", "PATCH"} else None
            for label, ids in (("B's partner_id", {**b}), ("B's ids under A", {**b, "partner_id": a["partner_id"]})):
                if label == "B's ids under A" and "{endpoint_id}" not in path and "{delivery_id}" not in path:
                    continue
                response = await client.request(method, path.format(**ids), json=body)
                if response.status_code != 404:
                    wrong.append(f"{method} {path} with {label}: {response.status_code} {response.text[:200]}")
        # Filters naming B's endpoint find nothing; A's lists hold only A's rows.
        for listing in ("deliveries", "attempts"):
            rows = (await client.get(f"/api/partners/{a['partner_id']}/webhooks/{listing}",
                                     params={"endpoint_id": b["endpoint_id"]})).json()
            assert rows["total"] == 0
        own = (await client.get(f"/api/partners/{a['partner_id']}/webhooks/deliveries")).json()
        assert [d["id"] for d in own["items"]] == [a["delivery_id"]]
        # B's event cannot be sent to A's endpoint.
        stolen = await client.post(f"/api/partners/{a['partner_id']}/webhooks/endpoints/{a['endpoint_id']}/redeliver",
                                   json={"event_id": b["event_id"]})
        assert stolen.status_code == 422 and stolen.json()["errors"][0]["reason"] == "no such event"
    assert not wrong, "\n".join(wrong)
    still = await admin.get(f"{ENDPOINTS}/{b['endpoint_id']}")
    assert still.status_code == 200 and still.json()["description"] == "" and len(still.json()["signing_secrets"]) == 1
