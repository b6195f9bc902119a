"""The gateway's hot path: a raw ASGI reverse proxy.

Per request: route by path prefix → match mapping rules → read the credential
→ resolve app, partner and access from the snapshot (dict lookups) → check and
consume every applicable limit atomically → stream to the upstream through one
pooled aiohttp session → stream the answer back → record usage in memory.
No framework, no database call, no Pydantic here.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp

from accord.gateway import snapshot as s
from accord.gateway.limits import LimitCheck, LimiterUnavailable, policy_item, ratelimit_item
from accord.gateway.problems import PROBLEM_CONTENT_TYPE, problem

log = logging.getLogger("accord.gateway")

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
                        b"trailer", b"trailers", b"transfer-encoding", b"upgrade", b"host", b"content-length"})
SECRET_HEADER = b"x-accord-gateway-secret"
SANDBOX_PATH = "/sandbox"
THRESHOLDS = (50, 80, 90, 100)  # percent of a limit that makes a usage.limit_threshold event
_TEMPLATE_VAR = re.compile(r"\{[^/}]+\}")


class Gateway:
    def __init__(self, *, server_key: str, snapshot: Callable[[], s.Snapshot], limiter: Any, recorder: Any,
                 metrics: Any, upstream_timeout: float = 30.0, connect_timeout: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._key = server_key.encode()
        self._snapshot = snapshot
        self.limiter = limiter
        self.recorder = recorder
        self.metrics = metrics
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=upstream_timeout)
        self._clock = clock
        self.http: aiohttp.ClientSession | None = None
        self._mock_patterns: dict[str, re.Pattern[str]] = {}

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
        self.http = aiohttp.ClientSession(connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                                          skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"))

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()

    # --- the request path -------------------------------------------------

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = time.perf_counter()
        snap = self._snapshot()
        path: str = scope["path"]
        headers = scope["headers"]
        environment = "production"
        if path == SANDBOX_PATH or path.startswith(SANDBOX_PATH + "/"):
            environment, path = "sandbox", path[len(SANDBOX_PATH):] or "/"
        else:
            host = _header(headers, b"host")
            if host is not None and host.startswith(b"sandbox."):
                environment = "sandbox"
        ctx = _Context(environment)
        try:
            await self._route(scope, receive, send, snap, path, headers, ctx)
        finally:
            latency = time.perf_counter() - started
            self.recorder.record(application_id=ctx.app_id, partner_id=ctx.partner_id, api_id=ctx.api_id,
                                 environment=environment, metrics=ctx.metrics, status=ctx.status,
                                 denial=ctx.denial, latency=latency, credential_id=ctx.credential_id)
            self.metrics.observe_request(ctx.api_slug, ctx.status, ctx.denial, ctx.upstream_latency)

    async def _route(self, scope: dict[str, Any], receive: Any, send: Any, snap: s.Snapshot, path: str,
                     headers: list[tuple[bytes, bytes]], ctx: _Context) -> None:
        if snap.version == 0 and not snap.apis_by_prefix:
            return await self._deny(send, ctx, "snapshot-unavailable")
        found = snap.api_for(path)
        if found is None:
            return await self._deny(send, ctx, s.NO_ROUTE, f"no API is served at {path}")
        api, rest = found
        ctx.api_id, ctx.api_slug = api.id, api.slug
        method: str = scope["method"]
        query_string: bytes = scope.get("query_string", b"")
        query = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True) if query_string else []
        matched = _match_rules(api, method, rest, query)
        if not matched:
            return await self._deny(send, ctx, s.NO_MAPPING_RULE, f"no mapping rule of {api.slug} matches {method} {rest}")

        # --- who is calling -------------------------------------------------
        secret, public_app_id = _read_credential(api, headers, query)
        if not secret:
            return await self._deny(send, ctx, s.MISSING_CREDENTIAL, _credential_hint(api))
        credential = snap.credentials.get(hmac.new(self._key, secret.encode(), hashlib.sha256).hexdigest())
        if credential is None:
            return await self._deny(send, ctx, s.UNKNOWN_CREDENTIAL)
        ctx.credential_id = credential.id
        if credential.revoked:
            return await self._deny(send, ctx, s.REVOKED_CREDENTIAL)
        if credential.expires_at is not None and credential.expires_at <= self._clock():
            return await self._deny(send, ctx, s.EXPIRED_CREDENTIAL)
        app = snap.apps.get(credential.application_id)
        if app is None or (api.credential_location == "app-id-key" and app.public_app_id != public_app_id):
            return await self._deny(send, ctx, s.UNKNOWN_CREDENTIAL)
        ctx.app_id, ctx.partner_id = app.id, app.partner_id
        partner = snap.partners[app.partner_id]
        if partner.status == "suspended":
            return await self._deny(send, ctx, s.PARTNER_SUSPENDED)
        if partner.status != "active":
            return await self._deny(send, ctx, s.PARTNER_INACTIVE, f"the partner is {partner.status}")
        if app.state == "suspended":
            return await self._deny(send, ctx, s.APPLICATION_SUSPENDED)
        if app.state != "live":
            return await self._deny(send, ctx, s.APPLICATION_PENDING)
        if app.environment != ctx.environment:
            return await self._deny(send, ctx, s.WRONG_ENVIRONMENT,
                                    f"a {app.environment} credential was used on {ctx.environment}; "
                                    + ("call under /sandbox" if app.environment == "sandbox" else "call without /sandbox"))

        # --- what it may do -------------------------------------------------
        access = app.access.get(api.id)
        if access is None:
            return await self._deny(send, ctx, s.NOT_IN_PRODUCTS, f"the application has no subscription giving {api.slug}")
        if access.denial is not None:
            return await self._deny(send, ctx, access.denial)
        if access.agreement_due is not None and ctx.environment == "production" \
                and access.agreement_due[0] <= self._clock():
            return await self._deny(send, ctx, s.AGREEMENT_REQUIRED, access.agreement_due[1])
        if access.allowed_http_methods is not None and method not in access.allowed_http_methods:
            return await self._deny(send, ctx, s.HTTP_METHOD_DISABLED,
                                    f"the {access.plan_slug} plan allows only {', '.join(sorted(access.allowed_http_methods))}")
        totals = _with_ancestors(api, matched)
        for metric_id in totals:
            if metric_id in access.disabled_metrics:
                return await self._deny(send, ctx, s.METHOD_DISABLED,
                                        f"the {access.plan_slug} plan disables {api.metric_names.get(metric_id, '?')}")
        if access.allowed_metrics is not None and not any(m in access.allowed_metrics for m, _ in matched):
            return await self._deny(send, ctx, s.METHOD_NOT_IN_PRODUCT)
        ctx.metrics = matched

        # --- limits -----------------------------------------------------------
        rate_headers: list[tuple[bytes, bytes]] = []
        if access.limits:
            end_user = _header(headers, api.end_user_header.encode()) if api.end_user_header else None
            scope_key = app.id + ("|u:" + end_user.decode("latin-1") if end_user else "")
            checks = [LimitCheck(f"{scope_key}|{limit.metric_id}", limit.period, limit.value, totals[limit.metric_id])
                      for limit in access.limits if limit.metric_id in totals]
            if checks:
                try:
                    decision = await self.limiter.consume(checks)
                except LimiterUnavailable:
                    return await self._deny(send, ctx, s.LIMITER_UNAVAILABLE)
                name = _policy_name(api, decision)
                reset = decision.reset if decision.window is not None else None  # eternity never resets
                rate_headers = [(b"ratelimit-policy", policy_item(name, decision.limit, decision.window).encode()),
                                (b"ratelimit", ratelimit_item(name, decision.remaining, reset).encode())]
                if decision.allowed:
                    self._note_threshold(app, api, checks, decision.used)
                if not decision.allowed:
                    if reset is not None:
                        rate_headers.append((b"retry-after", str(decision.retry_after or 1).encode()))
                    return await self._deny(send, ctx, s.LIMIT_REACHED,
                                            f"{name}: {decision.limit} per {decision.period} used up", rate_headers)

        # --- forward ----------------------------------------------------------
        upstream = api.upstreams.get(ctx.environment)
        if upstream is None:
            if ctx.environment == "sandbox" and api.mock_examples:
                return await self._mock(send, ctx, api, method, rest, rate_headers)
            return await self._deny(send, ctx, s.NO_UPSTREAM, f"{api.slug} has no {ctx.environment} upstream")
        await self._forward(scope, receive, send, ctx, api, app, upstream, rest, query, headers, rate_headers)

    def _note_threshold(self, app: s.AppEntry, api: s.ApiEntry, checks: list[LimitCheck],
                        used: tuple[int, ...]) -> None:
        """Tell the recorder about every limit this request took across 50/80/90/100 %."""
        for check, after in zip(checks, used):
            before = after - check.delta
            crossed = [p for p in THRESHOLDS if before * 100 < p * check.limit <= after * 100]
            if crossed:
                metric_id = check.key.rsplit("|", 1)[-1]
                self.recorder.note_limit_threshold(application_id=app.id, partner_id=app.partner_id, api_id=api.id,
                                                   metric=api.metric_names.get(metric_id, metric_id),
                                                   period=check.period, limit=check.limit, percent=crossed[-1])

    async def _forward(self, scope: dict[str, Any], receive: Any, send: Any, ctx: _Context, api: s.ApiEntry,
                       app: s.AppEntry, upstream: str, rest: str, query: list[tuple[str, str]],
                       headers: list[tuple[bytes, bytes]], rate_headers: list[tuple[bytes, bytes]]) -> None:
        if api.credential_location == "query":
            name = api.credential_name or "api_key"
            query = [(k, v) for k, v in query if k != name]
        url = upstream + rest + ("?" + urlencode(query) if query else "")
        out_headers = _upstream_headers(scope, headers, api, app)
        has_body = _header(headers, b"content-length") not in (None, b"0") or _header(headers, b"transfer-encoding")
        assert self.http is not None
        upstream_started = time.perf_counter()
        try:
            response = await self.http.request(scope["method"], url, headers=out_headers, allow_redirects=False,
                                               data=_body(receive) if has_body else None, timeout=self._timeout,
                                               compress=None)
        except asyncio.TimeoutError:
            return await self._deny(send, ctx, s.UPSTREAM_TIMEOUT)
        except aiohttp.ClientError:
            return await self._deny(send, ctx, s.UPSTREAM_UNREACHABLE)
        try:
            ctx.status = response.status
            answer = [(k.lower(), v) for k, v in response.raw_headers if k.lower() not in HOP_BY_HOP]
            length = response.headers.get("Content-Length")
            if length is not None:
                answer.append((b"content-length", length.encode()))
            await send({"type": "http.response.start", "status": response.status, "headers": answer + rate_headers})
            try:
                async for chunk in response.content.iter_chunked(65536):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except (asyncio.TimeoutError, aiohttp.ClientError):
                # Headers are gone already; all we can do is cut the answer short.
                log.warning("upstream of %s broke off mid-answer", api.slug)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            ctx.upstream_latency = time.perf_counter() - upstream_started
            response.release()

    async def _mock(self, send: Any, ctx: _Context, api: s.ApiEntry, method: str, rest: str,
                    rate_headers: list[tuple[bytes, bytes]]) -> None:
        for (verb, template), (status, body) in api.mock_examples.items():
            if verb == method and self._template_regex(template).match(rest):
                ctx.status = status
                await _respond(send, status, body, b"application/json", [(b"x-accord-mock", b"true"), *rate_headers])
                return
        await self._deny(send, ctx, s.NO_UPSTREAM, f"{api.slug} has no sandbox upstream and no example for {method} {rest}")

    def _template_regex(self, template: str) -> re.Pattern[str]:
        regex = self._mock_patterns.get(template)
        if regex is None:
            parts = _TEMPLATE_VAR.split(template)
            regex = re.compile("^" + "[^/]+".join(re.escape(p) for p in parts) + "$")
            self._mock_patterns[template] = regex
        return regex

    async def _deny(self, send: Any, ctx: _Context, reason: str, detail: str | None = None,
                    extra: list[tuple[bytes, bytes]] | None = None) -> None:
        status, body = problem(reason, detail)
        ctx.status, ctx.denial = status, reason
        await _respond(send, status, body, PROBLEM_CONTENT_TYPE, extra)


class _Context:
    """What the request turned out to be, for usage recording."""

    __slots__ = ("environment", "api_id", "api_slug", "app_id", "partner_id", "credential_id", "metrics", "status",
                 "denial", "upstream_latency")

    def __init__(self, environment: str) -> None:
        self.environment = environment
        self.api_id: str | None = None
        self.api_slug = ""
        self.app_id: str | None = None
        self.partner_id: str | None = None
        self.credential_id: str | None = None
        self.metrics: tuple[tuple[str, int], ...] | list[tuple[str, int]] = ()
        self.status = 500
        self.denial: str | None = None
        self.upstream_latency: float | None = None


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _read_credential(api: s.ApiEntry, headers: list[tuple[bytes, bytes]],
                     query: list[tuple[str, str]]) -> tuple[str | None, str | None]:
    location = api.credential_location
    if location == "authorization":
        value = _header(headers, b"authorization")
        if value and value[:7].lower() == b"bearer ":
            return value[7:].strip().decode("latin-1"), None
        return None, None
    if location == "header":
        value = _header(headers, (api.credential_name or "x-api-key").lower().encode())
        return (value.decode("latin-1") if value else None), None
    if location == "query":
        name = api.credential_name or "api_key"
        return next((v for k, v in query if k == name), None), None
    app_id = _header(headers, b"x-app-id")
    app_key = _header(headers, b"x-app-key")
    if not app_id or not app_key:
        return None, None
    return app_key.decode("latin-1"), app_id.decode("latin-1")


def _credential_hint(api: s.ApiEntry) -> str:
    return {
        "authorization": "send Authorization: Bearer <key>",
        "header": f"send the key in the {api.credential_name or 'X-API-Key'} header",
        "query": f"send the key as the {api.credential_name or 'api_key'} query parameter",
        "app-id-key": "send X-App-Id and X-App-Key headers",
    }.get(api.credential_location, "send a credential")


def _match_rules(api: s.ApiEntry, method: str, rest: str, query: list[tuple[str, str]]) -> list[tuple[str, int]]:
    matched: list[tuple[str, int]] = []
    params = dict(query) if query else {}
    for rule in api.rules:
        if rule.http_method != method and rule.http_method != "ANY":
            continue
        if not rule.regex.match(rest):
            continue
        if rule.query and not all(k in params and (v is None or params[k] == v) for k, v in rule.query):
            continue
        matched.append((rule.metric_id, rule.delta))
        if rule.last:
            break
    return matched


def _with_ancestors(api: s.ApiEntry, matched: list[tuple[str, int]]) -> dict[str, int]:
    """Units per metric, each matched metric's increment counted on all its ancestors too (hits)."""
    totals: dict[str, int] = {}
    for metric_id, delta in matched:
        current: str | None = metric_id
        while current is not None:
            totals[current] = totals.get(current, 0) + delta
            current = api.metric_parents.get(current)
    return totals


def _policy_name(api: s.ApiEntry, decision: Any) -> str:
    """`<metric>-<period>` of the tightest (or the exceeded) limit."""
    key = decision.key or ""
    return f"{api.metric_names.get(key.rsplit('|', 1)[-1], 'hits')}-{decision.period}"


def stripped_headers(credential_location: str, credential_name: str) -> frozenset[bytes]:
    """Request headers never forwarded upstream for an API (computed once, in its snapshot entry)."""
    drop = set(HOP_BY_HOP) | {SECRET_HEADER, b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
                              b"x-accord-partner", b"x-accord-application"}
    if credential_location == "authorization":
        drop.add(b"authorization")
    elif credential_location == "header":
        drop.add((credential_name or "x-api-key").lower().encode())
    elif credential_location == "app-id-key":
        drop |= {b"x-app-id", b"x-app-key"}
    return frozenset(drop)


def _upstream_headers(scope: dict[str, Any], headers: list[tuple[bytes, bytes]], api: s.ApiEntry,
                      app: s.AppEntry) -> list[tuple[str, str]]:
    drop: frozenset[bytes] | set[bytes] = api.stripped_headers
    connection = _header(headers, b"connection")
    if connection:
        drop = drop | {token.strip().lower() for token in connection.split(b",")}
    out = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers if k not in drop]
    client = scope.get("client")
    prior = _header(headers, b"x-forwarded-for")
    forwarded_for = ((prior.decode("latin-1") + ", ") if prior else "") + (client[0] if client else "")
    host = _header(headers, b"host")
    out += [("X-Forwarded-For", forwarded_for), ("X-Forwarded-Proto", scope.get("scheme", "http")),
            ("X-Accord-Gateway-Secret", api.upstream_secret)]
    if host:
        out.append(("X-Forwarded-Host", host.decode("latin-1")))
    if api.forward_identity:
        out += [("X-Accord-Partner", app.partner_id), ("X-Accord-Application", app.id)]
    return out


async def _body(receive: Any) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body"):
            return


async def _respond(send: Any, status: int, body: bytes, content_type: bytes,
                   extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra:
        headers += extra
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
