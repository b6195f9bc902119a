"""Outbound safety: non-public addresses refused unless allowed, timeouts, the response cap, no redirects."""
from __future__ import annotations

import socket
import time

import pytest

from accord.webhooks.dispatcher import WebhookDispatcher
from accord.webhooks.safety import GuardedResolver, RefusedDestination, refusal_reason, url_problem
from tests.webhooks.harness import Live, Receiver, live, resolves_to_non_public


async def _attempts(env: Live, endpoint_id: str) -> list[dict]:
    response = await env.admin.get("/admin/api/webhooks/attempts", params={"endpoint_id": endpoint_id})
    return response.json()["items"]


async def _dispatch_with(env: Live, **overrides: object) -> None:
    dispatcher = WebhookDispatcher(env.settings.model_copy(update=overrides), engine=env.engine)
    await dispatcher.start()
    try:
        await env.dispatch(dispatcher)
    finally:
        await dispatcher.close()


async def test_loopback_is_refused_unless_allowed(fresh_database_url: str) -> None:
    async with Receiver() as receiver, live(fresh_database_url) as env:
        literal = await env.endpoint(receiver.url())
        endpoints = [literal]
        host = socket.gethostname()
        if resolves_to_non_public(host):  # a name, so the check happens in the resolver
            endpoints.append(await env.endpoint(f"http://{host}:{receiver.port}/by-name"))
        await env.partner("acme")

        await _dispatch_with(env, webhooks_allow_private=False)
        assert receiver.requests == []
        [attempt] = await _attempts(env, literal["id"])
        assert attempt["succeeded"] is False and attempt["status_code"] is None
        assert attempt["error"].startswith("refused:") and "loopback" in attempt["error"]
        if len(endpoints) == 2:
            [by_name] = await _attempts(env, endpoints[1]["id"])
            assert by_name["error"].startswith("refused:") and f"{host} resolves to" in by_name["error"]
            assert "ACCORD_WEBHOOKS_ALLOW_PRIVATE" in by_name["error"]
        [delivery] = (await env.admin.get("/admin/api/webhooks/deliveries",
                                          params={"endpoint_id": literal["id"]})).json()["items"]
        assert delivery["status"] == "pending" and delivery["next_attempt_at"] is not None  # retried later

        await _dispatch_with(env, webhooks_allow_private=True)  # nothing is due yet: the retry waits
        assert receiver.requests == []


async def test_the_resolver_checks_every_address() -> None:
    resolver = GuardedResolver(allow_private=False)
    with pytest.raises(RefusedDestination, match="localhost resolves to 127.0.0.1, a loopback address"):
        await resolver.resolve("localhost", 80, socket.AF_INET)
    allowed = await GuardedResolver(allow_private=True).resolve("localhost", 80, socket.AF_INET)
    assert [r["host"] for r in allowed] == ["127.0.0.1"]


def test_which_addresses_are_refused() -> None:
    assert refusal_reason("127.0.0.1") == "a loopback address"
    assert refusal_reason("::1") == "a loopback address"
    assert refusal_reason("::ffff:10.0.0.1") == "a private address"
    assert refusal_reason("10.1.2.3") == refusal_reason("192.168.0.1") == "a private address"
    assert refusal_reason("169.254.169.254") == "a link-local address"  # cloud metadata
    assert refusal_reason("fe80::1%eth0") == "a link-local address"
    assert refusal_reason("224.0.0.1") == "a multicast address"
    assert refusal_reason("0.0.0.0") == "an unspecified address"
    assert refusal_reason("100.64.0.1") == "a reserved address"  # carrier-grade NAT
    assert refusal_reason("93.184.216.34") is None
    assert refusal_reason("2606:4700::1111") is None

    assert url_problem("https://example.com/h", allow_http=False, allow_private=False) is None
    assert url_problem("http://example.com/h", allow_http=False, allow_private=False) == "must be an https:// URL"
    assert url_problem("http://example.com/h", allow_http=True, allow_private=False) is None
    assert "loopback" in url_problem("https://localhost/h", allow_http=False, allow_private=False)
    assert "loopback" in url_problem("https://[::1]:8443/h", allow_http=False, allow_private=False)
    assert url_problem("https://[::1]:8443/h", allow_http=False, allow_private=True) is None
    assert url_problem("https://example.com:99999/", allow_http=False, allow_private=False) == "is not a valid URL"
    assert url_problem("https:///nohost", allow_http=False, allow_private=False) == "must name a host"


async def test_the_answer_is_read_up_to_the_cap_only(fresh_database_url: str) -> None:
    async with Receiver() as receiver, live(fresh_database_url, webhooks_timeout=5.0) as env:
        endpoint = await env.endpoint(receiver.url("/endless"))
        await env.partner("acme")
        started = time.monotonic()
        await env.dispatch()
        assert time.monotonic() - started < 4  # an endless answer did not hold the attempt to its timeout
        [attempt] = await _attempts(env, endpoint["id"])
        assert attempt["succeeded"] is True and attempt["status_code"] == 200
        assert attempt["response_excerpt"] == "x" * 1024


async def test_a_slow_endpoint_times_out_and_is_retried(fresh_database_url: str) -> None:
    async with Receiver() as receiver, live(fresh_database_url, webhooks_timeout=0.5) as env:
        endpoint = await env.endpoint(receiver.url("/slow"))
        await env.partner("acme")
        started = time.monotonic()
        await env.dispatch()
        assert time.monotonic() - started < 3
        assert len(receiver.at("/slow")) == 1
        [attempt] = await _attempts(env, endpoint["id"])
        assert attempt["error"] == "timed out after 0.5 s" and attempt["status_code"] is None
        assert 400 <= attempt["latency_ms"] < 2000
        [delivery] = (await env.admin.get("/admin/api/webhooks/deliveries",
                                          params={"endpoint_id": endpoint["id"]})).json()["items"]
        assert delivery["status"] == "pending" and delivery["last_error"] == "timed out after 0.5 s"


async def test_redirects_are_not_followed(fresh_database_url: str) -> None:
    async with Receiver() as receiver, live(fresh_database_url) as env:
        endpoint = await env.endpoint(receiver.url("/redirect"))
        await env.partner("acme")
        await env.dispatch()
        assert [r.path for r in receiver.requests] == ["/redirect"]
        [attempt] = await _attempts(env, endpoint["id"])
        assert (attempt["status_code"], attempt["error"]) == (302, "HTTP 302 (redirects are not followed)")


async def test_a_closed_port_is_a_failed_attempt(fresh_database_url: str) -> None:
    receiver = await Receiver().start()
    url = receiver.url()
    await receiver.stop()
    async with live(fresh_database_url) as env:
        endpoint = await env.endpoint(url)
        await env.partner("acme")
        await env.dispatch()
        [attempt] = await _attempts(env, endpoint["id"])
        assert attempt["error"].startswith("cannot connect:") and attempt["status_code"] is None
