"""The dispatcher end to end: committed events, real HTTP receivers, Standard Webhooks signatures."""
from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from accord.core.clock import clock
from accord.core.db import session_factory
from accord.webhooks.models import WebhookSecret
from accord.webhooks.sealing import new_signing_secret
from tests.webhooks.harness import Receiver, live, signed_by


def _parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


async def test_deliveries_are_signed_and_carry_the_event(fresh_database_url: str) -> None:
    async with Receiver() as receiver, live(fresh_database_url) as env:
        created = await env.endpoint(receiver.url(), description="CRM sync")
        secret = created["secret"]
        assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) >= 24
        partner = await env.partner("acme")

        assert await env.dispatch() == 2  # one event fanned out, one attempt
        [request] = receiver.requests
        payload = Webhook(secret).verify(request.body, request.headers)
        assert request.headers["content-type"] == "application/json"
        assert request.headers["webhook-id"] == payload["id"] and payload["id"].startswith("evt_")
        assert payload["type"] == "partner.created" and payload["partner_id"] == partner["id"]
        assert payload["data"]["object"]["slug"] == "acme"
        assert isinstance(payload["seq"], int)
        assert abs(_parse(payload["created_at"]) - request.at) < timedelta(seconds=30)
        event = (await env.admin.get(f"/admin/api/events/{payload['id']}")).json()
        assert event["seq"] == payload["seq"] and event["data"] == payload["data"]
        with pytest.raises(WebhookVerificationError):
            Webhook(new_signing_secret()).verify(request.body, request.headers)
        with pytest.raises(WebhookVerificationError):  # a changed body does not verify
            Webhook(secret).verify(request.body.replace(b"acme", b"acne"), request.headers)

        deliveries = (await env.admin.get("/admin/api/webhooks/deliveries",
                                          params={"endpoint_id": created["id"]})).json()["items"]
        assert [(d["event_id"], d["status"], d["attempts"], d["last_status_code"]) for d in deliveries] == [
            (payload["id"], "succeeded", 1, 200)]
        attempts = (await env.admin.get("/admin/api/webhooks/attempts",
                                        params={"delivery_id": deliveries[0]["id"]})).json()["items"]
        assert [(a["number"], a["succeeded"], a["status_code"], a["response_excerpt"], a["error"])
                for a in attempts] == [(1, True, 200, "ok", "")]
        assert attempts[0]["latency_ms"] >= 0

        async def attempt_count(**params: str) -> int:
            return (await env.admin.get("/admin/api/webhooks/attempts", params=params)).json()["total"]

        assert await attempt_count(event_type="partner.created") == 1
        assert await attempt_count(event_type="partner.updated") == 0
        assert await attempt_count(succeeded="true") == 1 and await attempt_count(succeeded="false") == 0

        # The secret is never answered again, and it is stored encrypted.
        again = await env.admin.get(f"/admin/api/webhooks/endpoints/{created['id']}")
        assert secret not in again.text and again.json()["signing_secrets"][0]["last4"] == secret[-4:]
        async with session_factory(env.engine)() as session:
            [stored] = (await session.scalars(select(WebhookSecret))).all()
        raw = base64.b64decode(secret.removeprefix("whsec_"))
        assert secret not in stored.sealed and secret.removeprefix("whsec_") not in stored.sealed
        assert base64.urlsafe_b64encode(raw).decode()[:20] not in stored.sealed


async def test_endpoints_receive_their_types_and_partners_only_their_own_events(fresh_database_url: str) -> None:
    async with Receiver() as receiver, live(fresh_database_url) as env:
        a = await env.partner("alpha")
        b = await env.partner("beta")
        tokens = {p["slug"]: await env.member_token(p["id"]) for p in (a, b)}

        await env.endpoint(receiver.url("/all"))
        await env.endpoint(receiver.url("/updates"), event_types=["partner.updated"])
        await env.endpoint(receiver.url("/off"), enabled=False)
        for partner in (a, b):
            async with env.client(tokens[partner["slug"]]) as client:
                made = await client.post(f"/api/partners/{partner['id']}/webhooks/endpoints",
                                         json={"url": receiver.url(f"/{partner['slug']}")})
                assert made.status_code == 201, made.text
        await env.dispatch()  # the partner.created events came before these endpoints: not sent
        assert receiver.requests == []

        for partner, contact in ((a, "Ann"), (b, "Bob")):
            changed = await env.admin.patch(f"/admin/api/partners/{partner['id']}", json={"contact_name": contact})
            assert changed.status_code == 200, changed.text
        app = await env.admin.post("/admin/api/applications", json={"partner_id": a["id"], "name": "App",
                                                                    "environment": "sandbox"})
        assert app.status_code == 201, app.text
        await env.dispatch()

        def seen(path: str) -> list[tuple[str, str]]:
            return sorted((r.json()["type"], r.json()["partner_id"]) for r in receiver.at(path))

        assert seen("/all") == sorted([("partner.updated", a["id"]), ("partner.updated", b["id"]),
                                       ("application.created", a["id"])])
        assert seen("/updates") == sorted([("partner.updated", a["id"]), ("partner.updated", b["id"])])
        assert seen("/alpha") == sorted([("partner.updated", a["id"]), ("application.created", a["id"])])
        assert seen("/beta") == [("partner.updated", b["id"])]
        assert seen("/off") == []


async def test_secret_rotation_signs_with_both_during_the_overlap_then_only_the_new(fresh_database_url: str) -> None:
    async with Receiver() as receiver, live(fresh_database_url) as env:
        endpoint = await env.endpoint(receiver.url())
        first = endpoint["secret"]
        rotate = f"/admin/api/webhooks/endpoints/{endpoint['id']}/rotate-secret"

        rotated = await env.admin.post(rotate, json={"overlap_hours": 1})
        assert rotated.status_code == 201, rotated.text
        second = rotated.json()["secret"]
        assert second != first
        [new, old] = rotated.json()["signing_secrets"]
        assert (new["last4"], new["expires_at"]) == (second[-4:], None)
        assert old["last4"] == first[-4:]
        assert timedelta(minutes=59) < _parse(old["expires_at"]) - datetime.now(UTC) <= timedelta(hours=1)

        await env.partner("during")
        await env.dispatch()
        [during] = receiver.requests
        assert len(during.headers["webhook-signature"].split(" ")) == 2
        assert Webhook(first).verify(during.body, during.headers)["type"] == "partner.created"
        assert Webhook(second).verify(during.body, during.headers)["type"] == "partner.created"

        # A rotation made two hours ago with a one-hour overlap: its overlap is over now.
        clock.freeze(datetime.now(UTC) - timedelta(hours=2))
        try:
            third = (await env.admin.post(rotate, json={"overlap_hours": 1})).json()["secret"]
        finally:
            clock.resume()
        listed = (await env.admin.get(f"/admin/api/webhooks/endpoints/{endpoint['id']}")).json()
        assert [s["last4"] for s in listed["signing_secrets"]] == [third[-4:]]

        await env.partner("after")
        await env.dispatch()
        after = receiver.requests[-1]
        assert after.json()["data"]["object"]["slug"] == "after"
        assert len(after.headers["webhook-signature"].split(" ")) == 1
        assert Webhook(third).verify(after.body, after.headers)["type"] == "partner.created"
        for expired in (first, second):
            with pytest.raises(WebhookVerificationError):
                Webhook(expired).verify(after.body, after.headers)


async def test_failures_back_off_with_jitter_then_fail_disable_and_tell_the_owner(fresh_database_url: str) -> None:
    start = datetime.now(UTC).replace(microsecond=0)
    clock.freeze(start)
    try:
        async with Receiver(status=500, body=b"E" * 5000) as receiver, live(fresh_database_url) as env:
            failing = await env.endpoint(receiver.url("/failing"))
            watcher = await env.endpoint(receiver.url("/watcher"), event_types=["webhook_endpoint.disabled"])
            await env.partner("acme")
            await env.dispatch()
            [delivery] = (await env.admin.get("/admin/api/webhooks/deliveries",
                                              params={"endpoint_id": failing["id"]})).json()["items"]
            url = f"/admin/api/webhooks/deliveries/{delivery['id']}"
            schedule = [5, 30, 120, 600, 3600, 3 * 3600] + [6 * 3600] * 40
            waits = []
            while True:
                delivery = (await env.admin.get(url)).json()
                if delivery["status"] != "pending":
                    break
                now = clock.now()
                due = _parse(delivery["next_attempt_at"])
                wait = (due - now).total_seconds()
                assert 1 <= wait <= schedule[delivery["attempts"] - 1], (delivery["attempts"], wait)
                waits.append(wait)
                assert await env.dispatcher.run_once() == 0  # not due yet: nothing is sent early
                clock.freeze(due)
                assert await env.dispatcher.run_once() >= 1

            assert delivery["status"] == "failed" and delivery["next_attempt_at"] is None
            give_up = start + timedelta(hours=72)
            assert _parse(delivery["finished_at"]) >= give_up
            assert len(waits) == delivery["attempts"] - 1 >= 15
            assert len(set(waits)) > len(waits) // 2  # jittered, not a fixed schedule
            assert set(receiver.ids("/failing").values()) == {delivery["attempts"]}  # one webhook-id, every time

            attempts = (await env.admin.get("/admin/api/webhooks/attempts",
                                            params={"delivery_id": delivery["id"], "limit": 200})).json()
            assert attempts["total"] == delivery["attempts"]
            assert {(a["status_code"], a["error"], a["succeeded"]) for a in attempts["items"]} == {
                (500, "HTTP 500", False)}
            assert {len(a["response_excerpt"]) for a in attempts["items"]} == {1024}

            endpoint = (await env.admin.get(f"/admin/api/webhooks/endpoints/{failing['id']}")).json()
            assert endpoint["enabled"] is False and "failed for 72 hours" in endpoint["disabled_reason"]
            events = (await env.admin.get("/admin/api/events", params={"type": "webhook_endpoint.disabled"})).json()
            [disabled] = events["items"]
            assert disabled["data"]["object"]["id"] == failing["id"] and disabled["partner_id"] is None
            assert "secret" not in str(disabled["data"]).lower()

            # The owner's watcher endpoint gets the news; the disabled endpoint gets nothing more.
            before = len(receiver.at("/failing"))
            receiver.status = 200
            await env.dispatch()
            [news] = receiver.at("/watcher")
            assert news.json()["type"] == "webhook_endpoint.disabled"
            assert signed_by(watcher["secret"], news) and not signed_by(failing["secret"], news)
            assert len(receiver.at("/failing")) == before
    finally:
        clock.resume()


async def test_a_later_success_ends_the_retries(fresh_database_url: str) -> None:
    start = datetime.now(UTC)
    clock.freeze(start)
    try:
        async with Receiver(status=503) as receiver, live(fresh_database_url) as env:
            endpoint = await env.endpoint(receiver.url())
            await env.partner("acme")
            await env.dispatch()
            receiver.status = 204
            clock.freeze(start + timedelta(seconds=6))  # past the first retry's longest wait
            await env.dispatch()
            [delivery] = (await env.admin.get("/admin/api/webhooks/deliveries",
                                              params={"endpoint_id": endpoint["id"]})).json()["items"]
            assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == ("succeeded", 2, 204)
            clock.freeze(start + timedelta(days=4))
            assert await env.dispatch() == 0
            assert len(receiver.requests) == 2
    finally:
        clock.resume()


async def test_redelivery_and_replay_send_the_same_webhook_ids_again(fresh_database_url: str) -> None:
    async with Receiver() as receiver, live(fresh_database_url) as env:
        endpoint = await env.endpoint(receiver.url(), event_types=["partner.created"])
        since = datetime.now(UTC) - timedelta(seconds=1)
        for slug in ("one", "two", "three"):
            await env.partner(slug)
        await env.admin.patch(f"/admin/api/partners/{(await env.partner('four'))['id']}", json={"notes": "x"})
        await env.dispatch()
        first = receiver.ids()
        assert len(first) == 4 and set(first.values()) == {1}

        deliveries = (await env.admin.get("/admin/api/webhooks/deliveries")).json()["items"]
        again = await env.admin.post(f"/admin/api/webhooks/deliveries/{deliveries[0]['id']}/redeliver")
        assert again.status_code == 201, again.text
        assert again.json()["kind"] == "redelivery" and again.json()["event_id"] == deliveries[0]["event_id"]
        by_event = await env.admin.post(f"/admin/api/webhooks/endpoints/{endpoint['id']}/redeliver",
                                        json={"event_id": deliveries[1]["event_id"]})
        assert by_event.status_code == 201, by_event.text
        await env.dispatch()
        assert receiver.ids()[deliveries[0]["event_id"]] == 2 and receiver.ids()[deliveries[1]["event_id"]] == 2

        updated = (await env.admin.get("/admin/api/events", params={"type": "partner.updated"})).json()["items"][0]
        refused = await env.admin.post(f"/admin/api/webhooks/endpoints/{endpoint['id']}/redeliver",
                                       json={"event_id": updated["id"]})
        assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "event_id"

        replayed = await env.admin.post(f"/admin/api/webhooks/endpoints/{endpoint['id']}/replay",
                                        json={"since": since.isoformat()})
        assert replayed.status_code == 200, replayed.text
        assert replayed.json()["deliveries_created"] == 4  # the partner.updated event is not one it receives
        await env.dispatch()
        assert set(receiver.ids()) == set(first)
        assert sorted(receiver.ids().values()) == [2, 2, 3, 3]
        for request in receiver.requests:
            Webhook(endpoint["secret"]).verify(request.body, request.headers)


async def test_reenabling_resumes_pending_deliveries(fresh_database_url: str) -> None:
    async with Receiver() as receiver, live(fresh_database_url) as env:
        endpoint = await env.endpoint(receiver.url())
        other = await env.endpoint(receiver.url("/other"))
        await env.partner("acme")
        await env.dispatcher.fan_out()
        off = await env.admin.patch(f"/admin/api/webhooks/endpoints/{endpoint['id']}", json={"enabled": False})
        assert off.json()["enabled"] is False and off.json()["disabled_reason"] == "disabled by hand"
        await env.dispatch()
        assert [r.path for r in receiver.requests] == ["/other"]
        on = await env.admin.patch(f"/admin/api/webhooks/endpoints/{endpoint['id']}", json={"enabled": True})
        assert on.json()["enabled"] is True and on.json()["disabled_reason"] == ""
        await env.dispatch()
        assert sorted(r.path for r in receiver.requests) == ["/hook", "/other"]
        assert other["id"] != endpoint["id"]


async def test_an_unreadable_secret_is_a_failed_attempt_not_a_crash(fresh_database_url: str) -> None:
    async with Receiver() as receiver, live(fresh_database_url) as env:
        endpoint = await env.endpoint(receiver.url())
        await env.partner("acme")
        other_key = env.settings.model_copy(update={"secret_key": "another-server-key-0123456789"})
        from accord.webhooks.dispatcher import WebhookDispatcher

        dispatcher = WebhookDispatcher(other_key, engine=env.engine)
        await dispatcher.start()
        try:
            assert await env.dispatch(dispatcher) >= 2
        finally:
            await dispatcher.close()
        assert receiver.requests == []  # nothing unsigned is ever sent
        [attempt] = (await env.admin.get("/admin/api/webhooks/attempts",
                                         params={"endpoint_id": endpoint["id"]})).json()["items"]
        assert attempt["error"].startswith("cannot sign:") and "ACCORD_SECRET_KEY" in attempt["error"]

        # Rotating repairs it: the next attempt is signed with the new secret.
        fresh = (await env.admin.post(f"/admin/api/webhooks/endpoints/{endpoint['id']}/rotate-secret",
                                      json={"overlap_hours": 0})).json()["secret"]
        await env.admin.post(f"/admin/api/webhooks/endpoints/{endpoint['id']}/replay",
                             json={"since": (datetime.now(UTC) - timedelta(minutes=5)).isoformat()})
        await env.dispatch()
        [request] = receiver.requests
        Webhook(fresh).verify(request.body, request.headers)
