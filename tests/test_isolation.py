"""A partner member can never see or change another partner's data.

Every partner-scoped route of the app (found from the app itself, so a new
route is covered the day it is added) is called by partner A's admin:
1. with partner B's `partner_id` → 404, exactly like a missing partner;
2. with A's own `partner_id` but B's application, credential, subscription,
   member or invitation ids → 404.
Afterwards B's data is unchanged.
"""
from __future__ import annotations

import re
import uuid

import httpx
from sqlalchemy import select

from accord.apps.models import Application, Credential
from accord.subscriptions.models import Subscription, SubscriptionState
from accord.teams.models import Invitation, Membership
from accord.events.models import Event
from accord.webhooks.models import WebhookDelivery, WebhookEndpoint
from accord.core.clock import utcnow
from accord.core.security import keyed_hash

# Request bodies valid enough to get past validation, by (method, path suffix).
BODIES: dict[tuple[str, str], dict] = {  # most specific suffix first
    ("POST", "/applications/{application_id}/subscriptions"): {"subscription_id": "{subscription_id}"},
    ("PATCH", "/partners/{partner_id}"): {"contact_name": "Mallory"},
    ("PATCH", "/members/{user_id}"): {"role": "viewer"},
    ("POST", "/invitations"): {"email": "mallory@example.com"},
    ("POST", "/subscriptions"): {"plan_id": "{plan_id}"},
    ("POST", "/change-plan"): {"plan_id": "{plan_id}"},
    ("POST", "/applications"): {"name": "Mallory", "environment": "sandbox"},
    ("PATCH", "/applications/{application_id}"): {"name": "Mallory"},
    ("POST", "/credentials"): {"name": "mallory"},
    ("PATCH", "/endpoints/{endpoint_id}"): {"description": "mallory"},
    ("POST", "/webhooks/endpoints"): {"url": "https://mallory.example/hook"},
    ("POST", "/endpoints/{endpoint_id}/redeliver"): {"event_id": "{event_id}"},
    ("POST", "/replay"): {"since": "2020-01-01T00:00:00Z", "until": "2030-01-01T00:00:00Z"},
}


# Ids of things that belong to no single partner (the catalog, announcements to many partners).
SHARED = {"product_id", "announcement_id"}


def _partner_routes(app) -> list[tuple[str, str]]:
    return [(method.upper(), path) for path, item in app.openapi()["paths"].items()
            if path.startswith("/api/") and "{partner_id}" in path for method in item]


def _body(method: str, path: str, ids: dict[str, str]) -> dict | None:
    for (m, suffix), body in BODIES.items():
        if m == method and path.endswith(suffix):
            return {k: v.format(**ids) if isinstance(v, str) else v for k, v in body.items()}
    return None


async def test_every_partner_route_refuses_another_partners_ids(server, factory, session, base_url) -> None:
    app, _ = server
    api = await factory.api()
    product = await factory.product(api, visibility="partner")
    plan = await factory.plan(product)

    async def partner_with_everything():
        partner = await factory.partner()
        admin_user, token = await factory.member(partner)
        dev_user, _ = await factory.member(partner, role="developer")
        subscription = await factory.subscription(partner, plan)
        app_row = await factory.application(partner)
        credential, _ = await factory.credential(app_row)
        invitation = Invitation(partner_id=partner.id, email=f"{uuid.uuid4().hex[:6]}@x.example",
                                token_hash=keyed_hash(uuid.uuid4().hex, "k"), expires_at=utcnow().replace(year=2100))
        session.add(invitation)
        await session.flush()
        endpoint = WebhookEndpoint(partner_id=partner.id, url="https://hooks.example/accord")
        session.add(endpoint)
        await session.flush()
        event = Event(id=f"evt_{uuid.uuid4().hex}", type="partner.updated", partner_id=partner.id, data={"object": {}})
        session.add(event)
        await session.flush()
        delivery = WebhookDelivery(endpoint_id=endpoint.id, event_seq=event.seq, event_id=event.id,
                                   event_type=event.type)
        session.add(delivery)
        await session.flush()
        ids = {"event_id": event.id, "endpoint_id": str(endpoint.id), "delivery_id": str(delivery.id), "partner_id": str(partner.id), "application_id": str(app_row.id), "credential_id": str(credential.id),
               "subscription_id": str(subscription.id), "user_id": str(dev_user.id),
               "invitation_id": str(invitation.id), "product_id": str(product.id), "plan_id": str(plan.id)}
        return partner, token, ids

    a, a_token, a_ids = await partner_with_everything()
    b, _, b_ids = await partner_with_everything()
    routes = _partner_routes(app)
    assert len(routes) >= 20

    wrong: list[str] = []
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {a_token}"}) as client:
        for method, path in routes:
            params = set(re.findall(r"{(\w+)}", path))
            # Ids of rows this test did not make (a new kind of route) are random: still 404.
            b_or_random = {k: b_ids.get(k, str(uuid.uuid4())) for k in params}
            attempts = [("B's partner_id", {**a_ids, **b_or_random, "partner_id": b_ids["partner_id"],
                                            **{k: a_ids[k] for k in params & SHARED if k in a_ids}})]
            owned = params - {"partner_id"} - SHARED
            if owned:
                attempts.append(("B's ids under A", {**a_ids, **{k: b_or_random[k] for k in owned}}))
            for label, ids in attempts:
                url = path.removeprefix("/api").format(**ids)
                response = await client.request(method, "/api" + url, json=_body(method, path, ids))
                if response.status_code != 404:
                    wrong.append(f"{method} {path} with {label}: {response.status_code} {response.text[:200]}")
    assert not wrong, "\n".join(wrong)

    # B's data survived every attempt.
    assert await session.get(Application, uuid.UUID(b_ids["application_id"])) is not None
    credential = await session.get(Credential, uuid.UUID(b_ids["credential_id"]))
    await session.refresh(credential)
    assert credential.revoked_at is None
    subscription = await session.get(Subscription, uuid.UUID(b_ids["subscription_id"]))
    await session.refresh(subscription)
    assert subscription.state == SubscriptionState.active
    members = (await session.scalars(select(Membership).where(Membership.partner_id == b.id))).all()
    assert len(members) == 2
    endpoint = await session.get(WebhookEndpoint, uuid.UUID(b_ids["endpoint_id"]))
    await session.refresh(endpoint)
    assert endpoint.description == "" and endpoint.enabled
