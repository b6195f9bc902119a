"""The gateway over real sockets: every denial reason, forwarding, streaming, upstream failures, live config."""
from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from accord.apps.models import ApplicationState, ApplicationSubscription, Credential, Environment
from accord.catalog.models import Metric
from accord.core.clock import utcnow
from accord.gateway.app import UVICORN_OPTIONS, GatewayApp
from accord.partners.models import Audience, PartnerStatus
from accord.plans.models import Period, PlanDisabledMetric
from accord.subscriptions.models import SubscriptionState
from tests.gateway.harness import EchoUpstream, Running, committed, gateway_settings, serve, serve_gateway


async def _seed(f, session, upstream: str) -> dict[str, Any]:
    api = await f.api(slug="social", path_prefix="/social", production_upstream_url=upstream + "/prod",
                      sandbox_upstream_url=upstream + "/sbx")
    hidden = await f.api(slug="internal-api", path_prefix="/internal", production_upstream_url=upstream,
                         visibility="internal")
    other = await f.api(slug="other", path_prefix="/other", production_upstream_url=upstream)
    hits = await session.scalar(select(Metric).where(Metric.api_id == api.id, Metric.system_name == "hits"))
    reads, writes, admin = (await f.metric(api, "reads"), await f.metric(api, "writes"), await f.metric(api, "purge"))
    await f.rule(api, reads, "GET", "/")
    await f.rule(api, writes, "POST", "/")
    await f.rule(api, admin, "DELETE", "/")
    for extra in (hidden, other):
        extra_hits = await session.scalar(select(Metric).where(Metric.api_id == extra.id, Metric.system_name == "hits"))
        await f.rule(extra, extra_hits, "ANY", "/")
    product = await f.product(api, hidden, visibility="partner")
    await f.product(other)
    plan = await f.plan(product, limits=[(hits, Period.minute, 1000)])
    session.add(PlanDisabledMetric(plan_id=plan.id, metric_id=admin.id))
    read_only = await f.plan(product, allowed_http_methods=["GET"])
    keys: dict[str, str] = {}

    async def app_with_key(name: str, *, plan_=plan, env=Environment.production, partner=None, app_state=None,
                           sub_state=SubscriptionState.active, **credential: Any):
        partner = partner or await f.partner()
        subscription = await f.subscription(partner, plan_, state=sub_state)
        app = await f.application(partner, env, **({"state": app_state} if app_state else {}))
        session.add(ApplicationSubscription(application_id=app.id, subscription_id=subscription.id))
        cred, secret = await f.credential(app, **credential)
        keys[name] = secret
        return partner, app, cred

    partner, app, _ = await app_with_key("good")
    await app_with_key("sandbox", env=Environment.sandbox, partner=partner)
    await app_with_key("read_only", plan_=read_only)
    await app_with_key("revoked", revoked_at=utcnow())
    await app_with_key("expired", expires_at=utcnow() - timedelta(seconds=1))
    await app_with_key("expiring", expires_at=utcnow() + timedelta(hours=1))
    await app_with_key("app_suspended", app_state=ApplicationState.suspended)
    await app_with_key("app_pending", app_state=ApplicationState.pending)
    await app_with_key("partner_suspended", partner=await f.partner(status=PartnerStatus.suspended))
    await app_with_key("public_audience", partner=await f.partner(audience=Audience.public))
    await app_with_key("sub_pending", sub_state=SubscriptionState.pending)
    return {"keys": keys, "api_id": str(api.id), "partner_id": str(partner.id), "app_id": str(app.id)}


@pytest.fixture(params=["accord-server", "uvicorn"])
async def running(request: pytest.FixtureRequest, fresh_database_url: str):
    """The gateway on its own server (as `accord gateway` runs it) and, being a plain ASGI app, under uvicorn."""
    upstream = EchoUpstream()
    async with serve(upstream) as upstream_url:
        data = await committed(fresh_database_url, lambda f, s: _seed(f, s, upstream_url))
        app = GatewayApp(gateway_settings(fresh_database_url))
        server = serve_gateway(app) if request.param == "accord-server" else serve(app, **UVICORN_OPTIONS)
        async with server as url:
            yield Running(url, app, upstream, fresh_database_url, data)


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _problem(client: httpx.AsyncClient, method: str, path: str, key: str | None, expected: int,
                   reason: str) -> httpx.Response:
    response = await client.request(method, path, headers=_bearer(key) if key else {})
    assert response.status_code == expected, (path, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == f"/problems/{reason}"
    return response


async def test_every_denial_reason_is_precise(running: Running) -> None:
    keys = running.data["keys"]
    async with httpx.AsyncClient(base_url=running.url) as c:
        await _problem(c, "GET", "/nowhere", keys["good"], 404, "no-route")
        await _problem(c, "PUT", "/social/x", keys["good"], 404, "no-mapping-rule")
        await _problem(c, "GET", "/social/x", None, 401, "credential-missing")
        await _problem(c, "GET", "/social/x", "acc_live_unknown", 401, "credential-unknown")
        await _problem(c, "GET", "/social/x", keys["revoked"], 401, "credential-revoked")
        await _problem(c, "GET", "/social/x", keys["expired"], 401, "credential-expired")
        await _problem(c, "GET", "/social/x", keys["app_suspended"], 403, "application-suspended")
        await _problem(c, "GET", "/social/x", keys["app_pending"], 403, "application-pending")
        await _problem(c, "GET", "/social/x", keys["partner_suspended"], 403, "partner-suspended")
        await _problem(c, "GET", "/social/x", keys["sandbox"], 403, "wrong-environment")
        await _problem(c, "GET", "/sandbox/social/x", keys["good"], 403, "wrong-environment")
        await _problem(c, "GET", "/other/x", keys["good"], 403, "api-not-in-products")
        await _problem(c, "GET", "/internal/x", keys["good"], 403, "above-visibility-tier")
        await _problem(c, "GET", "/social/x", keys["public_audience"], 403, "above-visibility-tier")
        await _problem(c, "GET", "/social/x", keys["sub_pending"], 403, "subscription-inactive")
        await _problem(c, "POST", "/social/x", keys["read_only"], 403, "http-method-disabled")
        await _problem(c, "DELETE", "/social/x", keys["good"], 403, "method-disabled")
        assert (await c.get("/social/x", headers=_bearer(keys["read_only"]))).status_code == 200
    assert all(keys["good"] not in str(seen) for seen in running.upstream.seen)


async def test_forwarding_headers_and_environment(running: Running) -> None:
    keys = running.data["keys"]
    async with httpx.AsyncClient(base_url=running.url) as c:
        response = await c.get("/social/users/7?fields=a&fields=b", headers={**_bearer(keys["good"]),
                                                                             "X-Forwarded-For": "10.0.0.1",
                                                                             "X-Real-IP": "10.9.9.9",
                                                                             "Forwarded": 'for="10.0.0.1',
                                                                             "Connection": "keep-alive, X-Drop",
                                                                             "X-Drop": "1", "X-Keep": "yes"})
        assert response.status_code == 200, response.text
        assert response.headers["x-upstream"] == "echo"
        assert len(response.headers.get_list("date")) == 1 and len(response.headers.get_list("server")) == 1
        seen = response.json()
        assert seen["path"] == "/prod/users/7" and seen["query"] == "fields=a&fields=b"
        sent = seen["headers"]
        assert "authorization" not in sent and "x-drop" not in sent and sent["x-keep"] == "yes"
        assert sent["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
        # What the caller claims about earlier hops is kept, and this hop appended; X-Real-IP is never the caller's.
        host = running.url.removeprefix("http://")
        assert sent["forwarded"] == f'for=127.0.0.1;proto=http;host="{host}"'
        assert sent["x-real-ip"] == "127.0.0.1" and sent["x-forwarded-proto"] == "http"
        assert [seen["header_names"].count(name) for name in ("x-real-ip", "forwarded", "x-forwarded-for")] == [1, 1, 1]
        assert sent["x-accord-partner"] == running.data["partner_id"]
        assert sent["x-accord-application"] == running.data["app_id"]
        from accord.gateway.builder import upstream_secret
        from tests.conftest import TEST_SECRET
        assert sent["x-accord-gateway-secret"] == upstream_secret(TEST_SECRET, running.data["api_id"])
        sandbox = await c.get("/sandbox/social/users", headers=_bearer(keys["sandbox"]))
        assert sandbox.status_code == 200 and sandbox.json()["path"] == "/sbx/users"
        # The caller's encoding of the path reaches the upstream as it was sent (%2F is not a slash).
        encoded = await c.get("/social/files/a%2Fb%20c", headers=_bearer(keys["good"]))
        assert encoded.json()["raw_path"] == "/prod/files/a%2Fb%20c" and encoded.json()["path"] == "/prod/files/a/b c"


async def test_the_proxy_headers_follow_each_request_on_one_connection(running: Running) -> None:
    """The gateway remembers the headers it adds per caller, Host and API: each request still gets its own."""
    keys = running.data["keys"]
    async with httpx.AsyncClient(base_url=running.url) as c:  # (one keep-alive connection for all of them)

        async def sent(**headers: str) -> dict[str, str]:
            response = await c.get("/social/users", headers={**_bearer(keys["good"]), **headers})
            assert response.status_code == 200, response.text
            return response.json()["headers"]

        first = await sent(Host="a.example")
        assert first["forwarded"] == 'for=127.0.0.1;proto=http;host="a.example"'
        assert first["x-forwarded-host"] == "a.example" and first["x-forwarded-for"] == "127.0.0.1"
        relayed = await sent(Host="a.example", **{"X-Forwarded-For": "10.0.0.1"})
        assert relayed["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
        again = await sent(Host="a.example")
        assert again["x-forwarded-for"] == "127.0.0.1", "a caller's earlier X-Forwarded-For was kept"
        other = await sent(Host="b.example")
        assert other["forwarded"] == 'for=127.0.0.1;proto=http;host="b.example"' and other["x-forwarded-host"] == "b.example"
        assert {k: v for k, v in again.items() if k != "content-length"} == \
            {k: v for k, v in first.items() if k != "content-length"}


async def test_remembered_proxy_headers_never_outlive_the_entries_they_were_made_from(running: Running) -> None:
    """A request admitted on the last snapshot may reach the upstream after a new one came (a Redis limit is awaited,
    say): the block of headers it makes must not serve the new snapshot's requests with the old API secret."""
    import dataclasses

    gateway, snapshot = running.app.gateway, running.app.loader.current
    api, _ = snapshot.api_for("/social/x", "")
    app = snapshot.apps[running.data["app_id"]]
    rotated = dataclasses.replace(api, upstream_secret="the-new-secret")
    scope = {"client": ("10.1.2.3", 5000), "scheme": "http"}
    old = gateway._proxy_block(scope, api, app, b"a.example", None)
    assert b"x-accord-gateway-secret: " + api.upstream_secret.encode() + b"\r\n" in old
    assert gateway._proxy_block(scope, api, app, b"a.example", None) == old  # (remembered)
    new = gateway._proxy_block(scope, rotated, app, b"a.example", None)
    assert b"x-accord-gateway-secret: the-new-secret\r\n" in new and api.upstream_secret.encode() not in new
    long_host = b"h" * 300 + b".example"  # not remembered, but still forwarded
    assert b'host="' + long_host + b'"' in gateway._proxy_block(scope, api, app, long_host, None)


async def test_large_bodies_stream_both_ways(running: Running) -> None:
    keys = running.data["keys"]
    payload = b"y" * (8 * 1024 * 1024)
    async with httpx.AsyncClient(base_url=running.url, timeout=30) as c:
        sent = await c.post("/social/upload", content=payload, headers=_bearer(keys["good"]))
        assert sent.status_code == 200 and sent.json()["body_bytes"] == len(payload)
        received = 0
        async with c.stream("GET", "/social/big?mb=16", headers=_bearer(keys["good"])) as response:
            assert response.status_code == 200
            async for chunk in response.aiter_bytes():
                received += len(chunk)
        assert received == 16 * 1024 * 1024


async def test_upstream_down_and_slow(running: Running, fresh_database_url: str) -> None:
    keys = running.data["keys"]
    async with httpx.AsyncClient(base_url=running.url, timeout=10) as c:
        slow = await _problem(c, "GET", "/social/slow", keys["good"], 504, "upstream-timeout")
        assert "127.0.0.1" not in slow.text
        await committed(fresh_database_url, _point_social_at_closed_port)
        await _wait_for_version(running.app, c)
        down = await _problem(c, "GET", "/social/users", keys["good"], 502, "upstream-unreachable")
        assert ":9" not in down.text


async def _point_social_at_closed_port(f, session) -> None:
    from accord.catalog.models import Api

    await session.execute(update(Api).where(Api.slug == "social").values(production_upstream_url="http://127.0.0.1:9"))
    from accord.core.version import ProgramVersion
    await session.execute(update(ProgramVersion).values(version=ProgramVersion.version + 1))


async def _wait_for_version(app: GatewayApp, _client: Any, timeout: float = 3.0) -> float:
    start_version, started = app.loader.current.version, time.monotonic()
    while app.loader.current.version == start_version:
        assert time.monotonic() - started < timeout, "the gateway did not see the change"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_a_new_limit_reaches_a_gateway_that_has_served_the_key(running: Running, fresh_database_url: str) -> None:
    """What admission remembers (the key's credential, the request's limit checks) goes with the snapshot."""
    keys = running.data["keys"]
    async with httpx.AsyncClient(base_url=running.url) as c:
        for _ in range(3):
            assert (await c.get("/social/x", headers=_bearer(keys["good"]))).status_code == 200

        async def tighten(f, session) -> None:
            from accord.plans.models import PlanLimit
            await session.execute(update(PlanLimit).where(PlanLimit.value == 1000).values(value=0))
            from accord.core.version import ProgramVersion
            await session.execute(update(ProgramVersion).values(version=ProgramVersion.version + 1))

        await committed(fresh_database_url, tighten)
        await _wait_for_version(running.app, c)
        refused = await _problem(c, "GET", "/social/x", keys["good"], 429, "limit-reached")
        assert "q=0" in refused.headers["ratelimit-policy"]


async def test_a_renamed_metric_is_named_anew_in_the_ratelimit_headers(running: Running,
                                                                       fresh_database_url: str) -> None:
    """The RateLimit-Policy strings the gateway keeps go with the snapshot, like the rest of what it remembers."""
    keys = running.data["keys"]
    async with httpx.AsyncClient(base_url=running.url) as c:
        before = await c.get("/social/x", headers=_bearer(keys["good"]))
        assert before.headers["ratelimit-policy"].startswith('"hits-minute";q=1000')

        async def rename(f, session) -> None:
            await session.execute(update(Metric).where(Metric.system_name == "hits").values(system_name="calls"))
            from accord.core.version import ProgramVersion
            await session.execute(update(ProgramVersion).values(version=ProgramVersion.version + 1))

        await committed(fresh_database_url, rename)
        await _wait_for_version(running.app, c)
        after = await c.get("/social/x", headers=_bearer(keys["good"]))
        assert after.headers["ratelimit-policy"].startswith('"calls-minute";q=1000')
        assert after.headers["ratelimit"].startswith('"calls-minute";r=998')


async def test_a_change_reaches_the_running_gateway_within_a_second(running: Running, fresh_database_url: str) -> None:
    keys = running.data["keys"]
    async with httpx.AsyncClient(base_url=running.url) as c:
        assert (await c.get("/social/x", headers=_bearer(keys["good"]))).status_code == 200

        async def revoke(f, session) -> None:
            cred = (await session.scalars(select(Credential))).all()
            for row in cred:
                row.revoked_at = utcnow()  # through the ORM: the version bump comes from the session hook

        changed_at = time.monotonic()
        await committed(fresh_database_url, revoke)
        while (await c.get("/social/x", headers=_bearer(keys["good"]))).status_code == 200:
            assert time.monotonic() - changed_at < 1.0, "revocation not enforced within 1 s"
            await asyncio.sleep(0.02)
        await _problem(c, "GET", "/social/x", keys["good"], 401, "credential-revoked")


async def test_a_key_expires_on_time_though_the_gateway_has_seen_it(running: Running) -> None:
    """The gateway remembers the keys it has seen (per snapshot); an expiry needs no new snapshot to count."""
    key = running.data["keys"]["expiring"]
    gateway = running.app.gateway
    version = running.app.loader.current.version
    async with httpx.AsyncClient(base_url=running.url) as c:
        for _ in range(3):
            assert (await c.get("/social/x", headers=_bearer(key))).status_code == 200
        gateway._clock = lambda: time.time() + 2 * 3600
        await _problem(c, "GET", "/social/x", key, 401, "credential-expired")
        gateway._clock = time.time
        assert (await c.get("/social/x", headers=_bearer(key))).status_code == 200
    assert running.app.loader.current.version == version  # the same snapshot throughout


async def test_gateway_keeps_serving_when_the_database_is_unreachable(running: Running) -> None:
    keys = running.data["keys"]
    loader = running.app.loader
    loader._url = "postgresql+psycopg://nobody@127.0.0.1:1/none"  # the next engine cannot connect
    await loader._engine.dispose()
    from accord.core.db import create_engine
    loader._engine = create_engine(loader._url)
    await asyncio.sleep(0.3)
    assert loader.database_ok is False
    async with httpx.AsyncClient(base_url=running.url) as c:
        assert (await c.get("/social/x", headers=_bearer(keys["good"]))).status_code == 200
        health = (await c.get("/healthz")).json()
        assert health["database"] == "unreachable" and health["status"] == "ok"


async def test_a_caller_leaving_mid_upload_never_reaches_the_upstream_as_complete(running: Running) -> None:
    port = int(running.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /social/cut HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n"
                 b"Authorization: Bearer " + running.data["keys"]["good"].encode() + b"\r\n\r\n"
                 b"400\r\n" + b"x" * 1024 + b"\r\n")
    await writer.drain()
    await asyncio.sleep(0.3)  # the first chunk is on its way upstream
    writer.transport.abort()  # gone, without the final chunk
    await asyncio.sleep(0.5)
    assert not [seen for seen in running.upstream.seen if seen["path"] == "/prod/cut"]
    async with httpx.AsyncClient(base_url=running.url) as c:  # and the gateway carries on
        assert (await c.get("/social/x", headers=_bearer(running.data["keys"]["good"]))).status_code == 200


async def test_dot_segments_never_reach_the_upstream(running: Running) -> None:
    """`/social/../admin` matches the API's prefix, but an upstream that normalises paths would serve
    what lies outside its base path: refused, also when the dots are percent-encoded."""
    import asyncio
    from urllib.parse import urlsplit

    address = urlsplit(running.url)
    seen = len(running.upstream.seen)
    for target in ("/social/../admin", "/social/x/%2e%2e/%2E%2E/admin", "/social/..%2fadmin", "/social/./x"):
        reader, writer = await asyncio.open_connection(address.hostname, address.port)
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {running.data['keys']['good']}\r\n"
                     "Connection: close\r\n\r\n".encode())
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 400 "), (target, answer[:200])
        assert b"/problems/dot-segment-in-path" in answer
    assert len(running.upstream.seen) == seen



async def test_snapshots_are_built_on_a_thread_of_their_own_released_at_close(running: Running) -> None:
    """The rebuild is Python work that would stop the serving loop (1.5 s at 100k credentials): the
    loader builds on its own thread (bench/snapshot_bench.py measures the stall), and gives it back."""
    import threading

    from accord.gateway.loader import SnapshotLoader
    from tests.conftest import TEST_SECRET

    def builder_threads() -> int:
        return sum(t.name.startswith("accord-snapshot") and t.is_alive() for t in threading.enumerate())

    before = builder_threads()  # the running gateway's own
    loader = SnapshotLoader(running.database_url, TEST_SECRET)
    await loader.start()
    try:
        assert loader.current.version == running.app.loader.current.version and loader.current.credentials
        assert builder_threads() == before + 1
    finally:
        await loader.close()
    assert builder_threads() == before


class _ForgetfulUpstream:
    """A raw upstream that answers `answers_per_connection` requests on a connection, then closes it on
    the next request without answering: to the gateway, a pooled connection that died as it was used."""

    def __init__(self, answers_per_connection: int) -> None:
        self.answers_per_connection = answers_per_connection
        self.connections = 0
        self.requests = 0
        self.dropped = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answered = 0
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                if answered >= self.answers_per_connection:
                    self.dropped += 1
                    break
                answered += 1
                body = b'{"n":%d}' % self.requests
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
                             % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _point_social_at(url: str, running: Running, client: httpx.AsyncClient) -> None:
    from accord.catalog.models import Api
    from accord.core.version import ProgramVersion

    async def point(f, session) -> None:
        await session.execute(update(Api).where(Api.slug == "social").values(production_upstream_url=url))
        await session.execute(update(ProgramVersion).values(version=ProgramVersion.version + 1))

    await committed(running.database_url, point)
    await _wait_for_version(running.app, client)


async def test_a_pooled_connection_the_upstream_dropped_is_retried_once_on_a_fresh_one(running: Running) -> None:
    """On the gateway's own server a bodyless request goes out on a pooled connection from callbacks
    (Gateway.direct); a connection the upstream closed meanwhile must cost the caller nothing."""
    keys = running.data["keys"]
    forgetful = _ForgetfulUpstream(answers_per_connection=1)
    server = await asyncio.start_server(forgetful.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=running.url, timeout=10) as c:
            await _point_social_at(f"http://127.0.0.1:{port}", running, c)
            for _ in range(4):
                response = await c.get("/social/x", headers=_bearer(keys["good"]))
                assert response.status_code == 200, response.text
            assert forgetful.dropped == 3  # each call after the first met its pooled connection dying, then a fresh one

            forgetful.answers_per_connection = 0  # now every connection is closed without an answer
            await _problem(c, "GET", "/social/x", keys["good"], 502, "upstream-unreachable")
            before = forgetful.requests
            await _problem(c, "POST", "/social/x", keys["good"], 502, "upstream-unreachable")
            assert forgetful.requests - before == 1  # not idempotent: never sent twice
    finally:
        server.close()
        await server.wait_closed()


async def test_a_slow_upstream_on_a_pooled_connection_times_out_and_the_gateway_carries_on(running: Running) -> None:
    keys = running.data["keys"]
    async with httpx.AsyncClient(base_url=running.url, timeout=10) as c:
        assert (await c.get("/social/x", headers=_bearer(keys["good"]))).status_code == 200  # a pooled connection
        started = time.monotonic()
        await _problem(c, "GET", "/social/slow", keys["good"], 504, "upstream-timeout")
        assert time.monotonic() - started < 2.5  # the 1 s read timeout, not the upstream's 3 s
        assert (await c.get("/social/x", headers=_bearer(keys["good"]))).status_code == 200
        received = 0
        async with c.stream("GET", "/social/big?mb=4", headers=_bearer(keys["good"])) as response:
            async for chunk in response.aiter_bytes():
                received += len(chunk)
        assert received == 4 * 1024 * 1024  # an answer still arriving continues on the connection's task


async def _two_apis_on_one_prefix(f, session, upstream: str) -> dict[str, Any]:
    on_host = await f.api(slug="maps-eu", path_prefix="/v1", hostname="maps.example.com",
                          production_upstream_url=upstream + "/on-host", sandbox_upstream_url=upstream + "/on-host-sbx")
    anywhere = await f.api(slug="maps-any", path_prefix="/v1", production_upstream_url=upstream + "/anywhere")
    longer = await f.api(slug="maps-tiles", path_prefix="/v1/tiles", production_upstream_url=upstream + "/longer")
    keys: dict[str, str] = {}
    partner = await f.partner()
    for api in (on_host, anywhere, longer):
        hits = await session.scalar(select(Metric).where(Metric.api_id == api.id, Metric.system_name == "hits"))
        await f.rule(api, hits, "ANY", "/")
    subscription = await f.subscription(partner, await f.plan(await f.product(on_host, anywhere, longer)))
    for env in (Environment.production, Environment.sandbox):
        app = await f.application(partner, env)
        session.add(ApplicationSubscription(application_id=app.id, subscription_id=subscription.id))
        keys[env.value] = (await f.credential(app))[1]
    return keys


@pytest.mark.parametrize("server", ["accord-server", "uvicorn"])
async def test_apis_on_one_prefix_are_routed_by_host(server: str, fresh_database_url: str) -> None:
    """An API bound to a host name serves that host (any port, and sandbox.<host>); the others serve the rest."""
    upstream = EchoUpstream()
    async with serve(upstream) as upstream_url:
        keys = await committed(fresh_database_url, lambda f, s: _two_apis_on_one_prefix(f, s, upstream_url))
        app = GatewayApp(gateway_settings(fresh_database_url))
        async with (serve_gateway(app) if server == "accord-server" else serve(app, **UVICORN_OPTIONS)) as url, \
                httpx.AsyncClient(base_url=url) as c:
            async def reached(path: str, host: str, key: str = keys["production"]) -> str:
                response = await c.get(path, headers={**_bearer(key), "Host": host})
                assert response.status_code == 200, response.text
                return response.json()["path"]

            assert await reached("/v1/tiles/3", "MAPS.example.com:8443") == "/on-host/tiles/3"  # host before prefix
            assert await reached("/v1/tiles/3", "other.example.com") == "/longer/3"
            assert await reached("/v1/places", "other.example.com") == "/anywhere/places"
            assert await reached("/v1/places", "127.0.0.1") == "/anywhere/places"
            assert await reached("/v1/places", "sandbox.maps.example.com", keys["sandbox"]) == "/on-host-sbx/places"
            assert await reached("/sandbox/v1/places", "maps.example.com", keys["sandbox"]) == "/on-host-sbx/places"
            assert await reached("/v1/places", "Sandbox.Maps.example.com", keys["sandbox"]) == "/on-host-sbx/places"
            assert await reached("/v1/places", "maps.example.com.") == "/on-host/places"  # the fully qualified form
