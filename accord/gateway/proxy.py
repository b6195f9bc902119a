"""The gateway's hot path: a raw ASGI reverse proxy.

Per request: route by path prefix → match mapping rules → read the credential
→ resolve app, partner and access from the snapshot (dict lookups) → check and
consume every applicable limit atomically → stream to the upstream over a pooled
keep-alive connection (accord.gateway.upstream; aiohttp for https:// upstreams)
→ stream the answer back → record usage in memory.
No framework, no database call, no Pydantic here.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from hashlib import blake2b
from typing import Any, Final
from urllib.parse import parse_qsl, quote, unquote_to_bytes

import aiohttp
import yarl

from accord.gateway import snapshot as s
from accord.gateway.limits import (LimitCheck, LimitDecision, LimiterUnavailable, MemoryLimiter, policy_item,
                                   ratelimit_item_quoted, sf_string)
from accord.gateway.metrics import GatewayMetrics
from accord.gateway.tally import Tally
from accord.gateway.problems import PROBLEM_CONTENT_TYPE, problem
from accord.gateway.server import Exchange
from accord.gateway.upstream import (IDEMPOTENT, Origin, UpstreamClient, UpstreamConnection, UpstreamTimeout,
                                     UpstreamUnreachable, parse_origin)

log = logging.getLogger("accord.gateway")

HOP_BY_HOP: Final = frozenset({b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
                        b"trailer", b"trailers", b"transfer-encoding", b"upgrade", b"host", b"content-length"})
SECRET_HEADER: Final = b"x-accord-gateway-secret"
SANDBOX_PATH: Final = "/sandbox"
THRESHOLDS: Final = (50, 80, 90, 100)  # percent of a limit that makes a usage.limit_threshold event
_TEMPLATE_VAR = re.compile(r"\{[^/}]+\}")
_PLAIN_HOST: Final = re.compile(rb"[A-Za-z0-9.\-]+(:[0-9]+)?|\[[0-9A-Fa-f:.]+\](:[0-9]+)?")  # a host name or IP, a port
ANSWER_HOP_BY_HOP: Final = HOP_BY_HOP - {b"content-length"}  # dropped from answers (the length is kept)
_UNPARSED: Final[Any] = object()
MEMO_ENTRIES: Final = 16_384  # per memo (keys seen, limit plans); a full memo is emptied, so memory stays bounded
MEMO_END_USER: Final = 128  # longer end-user ids are not remembered (one key could fill the memo with huge ones)
MEMO_HOST: Final = 255  # longer Host values are not remembered either (a host name has at most 253 characters)
_NO_CHECKS: Final[tuple[LimitCheck, ...]] = ()


class Gateway:
    def __init__(self, *, server_key: str, snapshots: Any, limiter: Any, recorder: Any,
                 metrics: GatewayMetrics, upstream_timeout: float = 30.0, connect_timeout: float = 5.0,
                 clock: Callable[[], float] = time.time, own_paths: frozenset[str] = frozenset()) -> None:
        self._key = server_key.encode()
        self._snapshots = snapshots  # its `current` is the snapshot to serve from (accord.gateway.loader)
        self._own_paths = own_paths  # answered by the app around the gateway (/healthz): never `direct`
        self.limiter = limiter
        self.recorder = recorder
        self.metrics = metrics
        self._connect_timeout = connect_timeout
        self._upstream_timeout = upstream_timeout
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=upstream_timeout)
        self._clock = clock
        self.upstream: UpstreamClient | None = None  # plain-http upstreams
        self.http: aiohttp.ClientSession | None = None  # https upstreams, made on first use
        self._origins: dict[str, Origin | None] = {}  # upstream base URL -> parsed (None: not plain http)
        self._mock_patterns: dict[str, re.Pattern[str]] = {}
        self._policies: dict[tuple[Any, ...], tuple[str, bytes, str]] = {}
        # What admission worked out for the snapshot `_memo_of` (see `_credential` and `_limit_plan`).
        self._memo_of: s.Snapshot | None = None
        # Keyed with a process's own key, so memo keys say nothing outside it; the keyed state is made
        # once and copied per request (the key costs a compression of its own).
        self._memo_hasher = blake2b(key=os.urandom(32), digest_size=16)
        self._credential_memo: dict[bytes, s.CredentialEntry] = {}
        self._plan_memo: dict[tuple[Any, ...], tuple[dict[str, int], tuple[LimitCheck, ...]]] = {}
        # Proxy header lines, with the API and application entries they were made from (see `_proxy_block`).
        self._block_memo: dict[tuple[Any, ...], tuple[s.ApiEntry, s.AppEntry, bytes]] = {}

    @property
    def recorder(self) -> Any:
        return self._recorder

    @recorder.setter
    def recorder(self, recorder: Any) -> None:
        self._recorder = recorder
        self._tally: Tally = recorder.tally  # its `record` runs per request (compiled, called directly)

    @property
    def limiter(self) -> Any:
        return self._limiter

    @limiter.setter
    def limiter(self, limiter: Any) -> None:
        self._limiter = limiter
        # In memory: decided without a coroutine (and called as compiled code calls compiled code).
        self._memory: MemoryLimiter | None = limiter if isinstance(limiter, MemoryLimiter) else None

    async def start(self) -> None:
        self.upstream = UpstreamClient(connect_timeout=self._connect_timeout, read_timeout=self._upstream_timeout)

    async def close(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
        if self.http is not None:
            await self.http.close()

    # --- the request path -------------------------------------------------
    #
    # Two ways in, one decision. `handle` is the ASGI path (any ASGI server). `direct` is what
    # this gateway's own server (accord.gateway.server) tries first for a request without a body:
    # admission, limits and a small upstream answer all happen in callbacks, without a task, a
    # future or an ASGI message (measured in bench/README.md: most of a request's cost was that
    # machinery, not the decision). Whatever `direct` cannot finish that way — an answer that
    # streams, a new upstream connection, a retry, https, a mock, Redis limits — continues as a
    # coroutine on the connection's task, through the same code the ASGI path runs.

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = time.perf_counter()
        ctx = _Context(scope)
        try:
            if await self._admitted(scope, ctx):
                await self._dispatch(scope, receive, send, ctx)
            else:
                await _respond(send, *self._refusal(ctx))
        finally:
            self._record(ctx, started)

    def direct(self, exchange: Exchange) -> bool:
        """Answer `exchange` (a bodyless request on accord.gateway.server) from callbacks; False: use `handle`.

        `exchange` offers `scope`, `receive`, `send`, `answer(status, headers, body)`,
        `continue_with(coroutine)` (finish on the connection's task) and `fail()`.
        """
        memory = self._memory
        if memory is None:  # limits in Redis: the decision needs a round trip
            return False
        started = time.perf_counter()
        scope = exchange.scope
        if scope["path"] in self._own_paths:
            return False
        ctx = _Context(scope)
        checks = self._admit(scope, ctx)
        if checks is not None and (not checks or self._within_limits(ctx, checks, memory.consume_now(checks))):
            if not self._forward_direct(exchange, ctx, started):
                exchange.continue_with(self._recorded(self._dispatch(scope, exchange.receive, exchange.send, ctx),
                                                      ctx, started))
            return True
        self._answer_now(exchange, ctx, started, *self._refusal(ctx))
        return True

    def _answer_now(self, exchange: Exchange, ctx: _Context, started: float, status: int,
                    headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """The direct path's answer, written at once, and the request recorded."""
        try:
            exchange.answer(status, headers, body)
        finally:
            self._record(ctx, started)

    def _record(self, ctx: _Context, started: float) -> None:
        self._tally.record(ctx.app_id, ctx.partner_id, ctx.api_id, ctx.environment, ctx.metrics, ctx.status,
                           ctx.denial, time.perf_counter() - started, ctx.credential_id)
        self.metrics.observe_request(ctx.api_slug, ctx.status, ctx.denial, ctx.upstream_latency)

    async def _recorded(self, work: Any, ctx: _Context, started: float) -> None:
        try:
            await work
        finally:
            self._record(ctx, started)

    async def _admitted(self, scope: dict[str, Any], ctx: _Context) -> bool:
        checks = self._admit(scope, ctx)
        if checks is None:
            return False
        if not checks:
            return True
        memory = self._memory
        try:
            decision = memory.consume_now(checks) if memory is not None else await self.limiter.consume(checks)
        except LimiterUnavailable:
            ctx.refuse(s.LIMITER_UNAVAILABLE)
            return False
        return self._within_limits(ctx, checks, decision)

    def _admit(self, scope: dict[str, Any], ctx: _Context) -> Sequence[LimitCheck] | None:
        """Everything before the limits: the limit checks to make (empty for none), or None when refused (`ctx` says why)."""
        snap: s.Snapshot = self._snapshots.current
        if snap.version == 0 and not snap.apis_by_prefix:
            return ctx.refuse("snapshot-unavailable")
        if snap is not self._memo_of:  # a new snapshot: nothing worked out for the last one holds
            self._memo_of = snap
            self._credential_memo = {}
            self._plan_memo = {}
            self._block_memo = {}
            self._policies = {}
        path = ctx.path
        if "/." in path and _has_dot_segment(path):
            # An upstream that normalises paths would resolve it outside the API's base path.
            return ctx.refuse(s.DOT_SEGMENT, "a path segment is . or .. (or %2e forms of them)")
        found = snap.api_for(path, ctx.hostname() if snap.routes_by_host else "")
        if found is None:
            return ctx.refuse(s.NO_ROUTE, f"no API is served at {path}")
        api, rest = found
        ctx.api, ctx.rest = api, rest
        ctx.api_id, ctx.api_slug = api.id, api.slug
        method: str = scope["method"]
        query_string: bytes = scope.get("query_string", b"")
        query = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True) if query_string else []
        matched = _match_rules(api, method, rest, query)
        if not matched:
            return ctx.refuse(s.NO_MAPPING_RULE, f"no mapping rule of {api.slug} matches {method} {rest}")

        # --- who is calling -------------------------------------------------
        headers = scope["headers"]
        secret, public_app_id = _read_credential(api, headers, query)
        if not secret:
            return ctx.refuse(s.MISSING_CREDENTIAL, _credential_hint(api))
        credential = self._credential(snap, secret)
        if credential is None:
            return ctx.refuse(s.UNKNOWN_CREDENTIAL)
        ctx.credential_id = credential.id
        if credential.revoked:
            return ctx.refuse(s.REVOKED_CREDENTIAL)
        if credential.expires_at is not None and credential.expires_at <= self._clock():
            return ctx.refuse(s.EXPIRED_CREDENTIAL)
        app = snap.apps.get(credential.application_id)
        if app is None or (api.credential_location == "app-id-key" and app.public_app_id != public_app_id):
            return ctx.refuse(s.UNKNOWN_CREDENTIAL)
        ctx.app = app
        ctx.app_id, ctx.partner_id = app.id, app.partner_id
        partner = snap.partners[app.partner_id]
        if partner.status == "suspended":
            return ctx.refuse(s.PARTNER_SUSPENDED)
        if partner.status != "active":
            return ctx.refuse(s.PARTNER_INACTIVE, f"the partner is {partner.status}")
        if app.state == "suspended":
            return ctx.refuse(s.APPLICATION_SUSPENDED)
        if app.state != "live":
            return ctx.refuse(s.APPLICATION_PENDING)
        if app.environment != ctx.environment:
            return ctx.refuse(s.WRONG_ENVIRONMENT,
                              f"a {app.environment} credential was used on {ctx.environment}; "
                              + ("call under /sandbox" if app.environment == "sandbox" else "call without /sandbox"))

        # --- what it may do -------------------------------------------------
        access = app.access.get(api.id)
        if access is None:
            return ctx.refuse(s.NOT_IN_PRODUCTS, f"the application has no subscription giving {api.slug}")
        if access.denial is not None:
            return ctx.refuse(access.denial)
        if access.agreement_due is not None and ctx.environment == "production" \
                and access.agreement_due[0] <= self._clock():
            return ctx.refuse(s.AGREEMENT_REQUIRED, access.agreement_due[1])
        if access.allowed_http_methods is not None and method not in access.allowed_http_methods:
            return ctx.refuse(s.HTTP_METHOD_DISABLED,
                              f"the {access.plan_slug} plan allows only {', '.join(sorted(access.allowed_http_methods))}")
        end_user = _header(headers, api.end_user_header.encode()) if api.end_user_header else None
        totals, checks = self._limit_plan(api, app, access, matched, end_user)
        if access.disabled_metrics:
            for metric_id in totals:
                if metric_id in access.disabled_metrics:
                    return ctx.refuse(s.METHOD_DISABLED,
                                      f"the {access.plan_slug} plan disables {api.metric_names.get(metric_id, '?')}")
        if access.allowed_metrics is not None and not any(m in access.allowed_metrics for m, _ in matched):
            return ctx.refuse(s.METHOD_NOT_IN_PRODUCT)
        ctx.metrics = matched
        return checks

    def _credential(self, snap: s.Snapshot, secret: str) -> s.CredentialEntry | None:
        """The snapshot's credential for a presented key, or None.

        The snapshot knows keys by their HMAC-SHA256 (as stored). A key seen before in this snapshot
        is found by a keyed BLAKE2b instead, about a third of the cost (bench/README.md); the memo holds
        digests only, never a key.
        """
        presented = secret.encode()
        hasher = self._memo_hasher.copy()
        hasher.update(presented)
        seen = hasher.digest()
        memo = self._credential_memo
        credential = memo.get(seen)
        if credential is None:
            credential = snap.credentials.get(hmac.digest(self._key, presented, "sha256").hex())
            if credential is not None:  # (unknown keys are not kept: anyone can send any number of them)
                if len(memo) >= MEMO_ENTRIES:
                    memo.clear()
                memo[seen] = credential
        return credential

    def _limit_plan(self, api: s.ApiEntry, app: s.AppEntry, access: s.Access, matched: list[tuple[str, int]],
                    end_user: bytes | None) -> tuple[dict[str, int], tuple[LimitCheck, ...]]:
        """The units per metric (with ancestors) and the limit checks of a request, worked out once per shape.

        The same application calling the same rules of an API (for the same end user) makes the same
        checks while the snapshot stands; they are never changed once made, so one tuple serves them all.
        """
        shape = (app.id, api.id, end_user, *matched)
        remembered = end_user is None or len(end_user) <= MEMO_END_USER
        plan = self._plan_memo.get(shape) if remembered else None
        if plan is None:
            totals = _with_ancestors(api, matched)
            checks = _NO_CHECKS
            if access.limits:
                scope_key = app.id + ("|u:" + end_user.decode("latin-1") if end_user else "")
                checks = tuple(LimitCheck(f"{scope_key}|{limit.metric_id}", limit.period, limit.value,
                                          totals[limit.metric_id])
                               for limit in access.limits if limit.metric_id in totals)
            plan = (totals, checks)
            if remembered:
                if len(self._plan_memo) >= MEMO_ENTRIES:
                    self._plan_memo.clear()
                self._plan_memo[shape] = plan
        return plan

    def _within_limits(self, ctx: _Context, checks: Sequence[LimitCheck], decision: LimitDecision) -> bool:
        """Keep the RateLimit headers for the answer; False (and `ctx` refused) when a limit is reached."""
        api = ctx.api
        name, policy, quoted = self._policy(api, decision)
        reset = decision.reset if decision.window is not None else None  # eternity never resets
        ctx.rate_headers = rate_headers = [(b"ratelimit-policy", policy),
                                           (b"ratelimit", ratelimit_item_quoted(quoted, decision.remaining, reset).encode())]
        if decision.allowed:
            self._note_threshold(ctx.app, api, checks, decision.used)
            return True
        if reset is not None:
            rate_headers.append((b"retry-after", str(decision.retry_after or 1).encode()))
        ctx.refuse(s.LIMIT_REACHED, f"{name}: {decision.limit} per {decision.period} used up", rate_headers)
        return False

    async def _dispatch(self, scope: dict[str, Any], receive: Any, send: Any, ctx: _Context) -> None:
        """An admitted request: forwarded, answered from the API's examples, or refused for want of an upstream."""
        api = ctx.api
        upstream = api.upstreams.get(ctx.environment)
        if upstream is None:
            if ctx.environment == "sandbox" and api.mock_examples:
                return await self._mock(send, ctx, api, scope["method"], ctx.rest)
            ctx.refuse(s.NO_UPSTREAM, f"{api.slug} has no {ctx.environment} upstream")
            return await _respond(send, *self._refusal(ctx))
        await self._forward(scope, receive, send, ctx, upstream)

    def _refusal(self, ctx: _Context) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The answer to a refused request: status, headers and problem+json body."""
        status, body = problem(ctx.denial or "snapshot-unavailable", ctx.detail)
        ctx.status = status
        return status, _headers(PROBLEM_CONTENT_TYPE, body, ctx.extra), body

    def _policy(self, api: s.ApiEntry, decision: LimitDecision) -> tuple[str, bytes, str]:
        """The decision's policy name `<metric>-<period>`, its RateLimit-Policy item and its name as an sf-string.

        Kept per check and window length for the snapshot (checks are made per snapshot too, `_limit_plan`):
        the same few strings would otherwise be built per request.
        """
        ident = (decision.check, decision.window)
        known = self._policies.get(ident)
        if known is None:
            if len(self._policies) >= MEMO_ENTRIES:
                self._policies.clear()
            metric_id = (decision.key or "").rsplit("|", 1)[-1]
            name = f"{api.metric_names.get(metric_id, 'hits')}-{decision.period}"
            known = self._policies[ident] = (name, policy_item(name, decision.limit, decision.window).encode(),
                                             sf_string(name))
        return known

    def _note_threshold(self, app: s.AppEntry, api: s.ApiEntry, checks: Sequence[LimitCheck],
                        used: tuple[int, ...]) -> None:
        """Tell the recorder about every limit this request took across 50/80/90/100 %."""
        for check, after in zip(checks, used):
            if after * 2 < check.limit:
                continue  # below 50 %: the usual case, decided without the list below
            before = after - check.delta
            crossed = [p for p in THRESHOLDS if before * 100 < p * check.limit <= after * 100]
            if crossed:
                metric_id = check.key.rsplit("|", 1)[-1]
                self.recorder.note_limit_threshold(application_id=app.id, partner_id=app.partner_id, api_id=api.id,
                                                   metric=api.metric_names.get(metric_id, metric_id),
                                                   period=check.period, limit=check.limit, percent=crossed[-1])

    def _origin(self, upstream: str) -> Origin | None:
        origin = self._origins.get(upstream, _UNPARSED)
        if origin is _UNPARSED:
            origin = self._origins[upstream] = parse_origin(upstream)
        return origin

    def _upstream_head(self, scope: dict[str, Any], ctx: _Context, origin: Origin) -> tuple[bytes, bool, bool]:
        """The request line and headers for the upstream, whether a body follows, and whether it is chunked."""
        headers = scope["headers"]
        has_body, chunked, length = _request_body(headers)
        method: str = scope["method"]
        head = [method.encode(), b" ", origin.base_path, _target(scope, ctx.rest, ctx.api), b" HTTP/1.1\r\nhost: ",
                origin.host_header, b"\r\n"]
        api, app = ctx.api, ctx.app
        kept, host, prior = _kept_headers(headers, api.stripped_headers)
        for name, value in kept:
            head.append(name)
            head.append(b": ")
            head.append(value)
            head.append(b"\r\n")
        head.append(self._proxy_block(scope, api, app, host, prior))
        if has_body:
            head.append(b"content-length: " + length + b"\r\n\r\n" if length is not None else
                        b"transfer-encoding: chunked\r\n\r\n")
        else:
            head.append(b"\r\n")
        return b"".join(head), has_body, chunked

    def _proxy_block(self, scope: dict[str, Any], api: s.ApiEntry, app: s.AppEntry, host: bytes | None,
                     prior: bytes | None) -> bytes:
        """`_proxy_headers` as header lines, remembered per API, application, caller address, Host and scheme.

        They are the same for every request of a connection (unless the caller sends X-Forwarded-For):
        made once, they cost a dict lookup instead of a dozen small byte strings per request.
        """
        client = scope.get("client")
        key = (api.id, app.id, client[0] if client else "", host, scope.get("scheme"))
        remembered = prior is None and (host is None or len(host) <= MEMO_HOST)
        if remembered:
            # Kept with the very API and application entries it was made from: a request admitted on the
            # last snapshot may come here after the memo was emptied for a new one (a Redis limit, say),
            # and must not leave its old secret for the new snapshot's requests.
            known = self._block_memo.get(key)
            if known is not None and known[0] is api and known[1] is app:
                return known[2]
        block = b"".join([name + b": " + value + b"\r\n" for name, value in _proxy_headers(scope, api, app, host,
                                                                                              prior)])
        if remembered:
            if len(self._block_memo) >= MEMO_ENTRIES:
                self._block_memo.clear()
            self._block_memo[key] = (api, app, block)
        return block

    def _forward_direct(self, exchange: Exchange, ctx: _Context, started: float) -> bool:
        """Send a bodyless request on an idle pooled connection; its answer is relayed from callbacks (`_DirectRelay`).

        False (nothing sent) when that takes a coroutine: no upstream, https, no idle connection.
        """
        upstream = ctx.api.upstreams.get(ctx.environment)
        if upstream is None:
            return False
        origin = self._origin(upstream)
        if origin is None:
            return False
        assert self.upstream is not None  # (made by `start`)
        connection = self.upstream.idle_connection(origin.key)
        if connection is None:
            return False
        head, _, _ = self._upstream_head(exchange.scope, ctx, origin)
        _DirectRelay(self, exchange, ctx, connection, upstream, started).send(head)
        return True

    async def _forward(self, scope: dict[str, Any], receive: Any, send: Any, ctx: _Context, upstream: str,
                       retry: bool = True) -> None:
        origin = self._origin(upstream)
        if origin is None:  # https: through aiohttp
            return await self._forward_aiohttp(scope, receive, send, ctx, upstream)
        head, has_body, chunked = self._upstream_head(scope, ctx, origin)
        upstream_started = time.perf_counter()
        assert self.upstream is not None
        try:
            _, connection = await self.upstream.request(origin, scope["method"], head,
                                                        (lambda: _Body(receive)) if has_body else None, chunked,
                                                        retry=retry)
        except UpstreamTimeout:
            return await self._deny(send, ctx, s.UPSTREAM_TIMEOUT)
        except UpstreamUnreachable:
            return await self._deny(send, ctx, s.UPSTREAM_UNREACHABLE)
        except ClientGone:
            ctx.status = CLIENT_CLOSED_REQUEST  # the upstream connection was closed mid-body, nothing to answer
            return
        await self._relay(send, ctx, connection, upstream_started)

    async def _relay(self, send: Any, ctx: _Context, connection: Any, upstream_started: float) -> None:
        """Stream the upstream's answer (its head is in) to the caller, then give the connection back."""
        try:
            ctx.status = connection.status
            await send({"type": "http.response.start", "status": connection.status,
                        "headers": _answer_headers(ctx, connection.headers)})
            if connection.complete:  # the usual small answer: already all here, one write
                await send({"type": "http.response.body", "body": connection.take(), "more_body": False})
                return
            try:
                while chunk := await connection.read():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except (UpstreamTimeout, UpstreamUnreachable):
                # Headers are gone already: the answer is left unfinished, so the server closes the
                # connection. Ending it (a last chunk) would tell the caller a cut body is whole.
                log.warning("upstream of %s broke off mid-answer", ctx.api_slug)
                return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            ctx.upstream_latency = time.perf_counter() - upstream_started
            assert self.upstream is not None
            self.upstream.release(connection)

    async def _forward_aiohttp(self, scope: dict[str, Any], receive: Any, send: Any, ctx: _Context,
                               upstream: str) -> None:
        """The path for https:// upstreams (TLS through aiohttp's pooled session, made on first use)."""
        if self.http is None:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
            self.http = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                              cookie_jar=aiohttp.DummyCookieJar(),
                                              skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"))
        headers = scope["headers"]
        has_body = _request_body(headers)[0]
        target = _target(scope, ctx.rest, ctx.api)
        url = yarl.URL(upstream.rstrip("/") + target.decode("latin-1"), encoded=True)
        out_headers = [(k.decode("latin-1"), v.decode("latin-1"))
                       for k, v in _upstream_headers(scope, headers, ctx.api, ctx.app)]
        upstream_started = time.perf_counter()
        try:
            response = await self.http.request(scope["method"], url, headers=out_headers, allow_redirects=False,
                                               data=_Body(receive) if has_body else None, timeout=self._timeout,
                                               compress=None)
        except ClientGone:
            ctx.status = CLIENT_CLOSED_REQUEST
            return
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
            await send({"type": "http.response.start", "status": response.status, "headers": answer + ctx.rate_headers})
            try:
                async for chunk in response.content.iter_chunked(65536):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except (asyncio.TimeoutError, aiohttp.ClientError):
                log.warning("upstream of %s broke off mid-answer", ctx.api_slug)
                return  # unfinished: the server closes the connection (see _relay)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            ctx.upstream_latency = time.perf_counter() - upstream_started
            response.release()

    async def _mock(self, send: Any, ctx: _Context, api: s.ApiEntry, method: str, rest: str) -> None:
        for (verb, template), (status, body) in api.mock_examples.items():
            if verb == method and self._template_regex(template).match(rest):
                ctx.status = status
                await _respond(send, status, _headers(b"application/json", body,
                                                      [(b"x-accord-mock", b"true"), *ctx.rate_headers]), body)
                return
        await self._deny(send, ctx, s.NO_UPSTREAM, f"{api.slug} has no sandbox upstream and no example for {method} {rest}")

    def _template_regex(self, template: str) -> re.Pattern[str]:
        regex = self._mock_patterns.get(template)
        if regex is None:
            parts = _TEMPLATE_VAR.split(template)
            regex = re.compile("^" + "[^/]+".join(re.escape(p) for p in parts) + "$")
            self._mock_patterns[template] = regex
        return regex

    async def _deny(self, send: Any, ctx: _Context, reason: str, detail: str | None = None) -> None:
        ctx.refuse(reason, detail)
        await _respond(send, *self._refusal(ctx))


class _DirectRelay:
    """A request `Gateway.direct` sent upstream: the connection calls `on_event` on each change, no task waits.

    A complete answer in (the usual small one) is written to the caller at once. An answer still
    arriving, or a retry on a fresh connection, continues as a coroutine on the caller's connection.
    """

    __slots__ = ("gateway", "exchange", "ctx", "connection", "upstream", "started", "upstream_started")

    def __init__(self, gateway: Gateway, exchange: Exchange, ctx: _Context, connection: UpstreamConnection, upstream: str,
                 started: float) -> None:
        self.gateway = gateway
        self.exchange = exchange
        self.ctx = ctx
        self.connection = connection
        self.upstream = upstream
        self.started = started
        self.upstream_started = 0.0

    def send(self, head: bytes) -> None:
        self.upstream_started = time.perf_counter()
        assert self.gateway.upstream is not None
        self.gateway.upstream.begin(self.connection, head, self.exchange.scope["method"], self.on_event)

    def on_event(self) -> None:
        connection = self.connection
        if not connection.headers_done and connection.error is None:
            return  # more of the answer's head to come
        connection.stop_listening()
        try:
            if connection.headers_done:
                self._answer()
            else:
                self._failed(connection.error)
        except Exception:
            log.exception("the gateway failed relaying %s %s", self.exchange.scope["method"], self.exchange.scope["path"])
            self.exchange.fail()

    def _answer(self) -> None:
        gateway, ctx, connection, exchange = self.gateway, self.ctx, self.connection, self.exchange
        if not connection.complete:
            exchange.continue_with(gateway._recorded(gateway._relay(exchange.send, ctx, connection,
                                                                     self.upstream_started), ctx, self.started))
            return
        ctx.status = status = connection.status
        ctx.upstream_latency = time.perf_counter() - self.upstream_started
        headers = _answer_headers(ctx, connection.headers)
        body = connection.take()
        assert gateway.upstream is not None
        gateway.upstream.release(connection)
        gateway._answer_now(exchange, ctx, self.started, status, headers, body)

    def _failed(self, error: Exception | None) -> None:
        gateway, ctx, connection, exchange = self.gateway, self.ctx, self.connection, self.exchange
        connection.close()
        if isinstance(error, UpstreamUnreachable) and not connection.received_any \
                and exchange.scope["method"] in IDEMPOTENT:
            # The upstream closed this pooled connection as we used it: once more, on a fresh one.
            exchange.continue_with(gateway._recorded(
                gateway._forward(exchange.scope, exchange.receive, exchange.send, ctx, self.upstream, retry=False),
                ctx, self.started))
            return
        ctx.refuse(s.UPSTREAM_TIMEOUT if isinstance(error, UpstreamTimeout) else s.UPSTREAM_UNREACHABLE)
        gateway._answer_now(exchange, ctx, self.started, *gateway._refusal(ctx))


class _Context:
    """What the request is and turned out to be: the decision's state, then what usage recording needs."""

    __slots__ = ("environment", "path", "host", "api", "rest", "app", "rate_headers", "detail", "extra", "api_id",
                 "api_slug", "app_id", "partner_id", "credential_id", "metrics", "status", "denial", "upstream_latency")

    def __init__(self, scope: dict[str, Any]) -> None:
        path: str = scope["path"]
        environment = "production"
        host: bytes | None = _header(scope["headers"], b"host")
        self.host = host
        if path == SANDBOX_PATH or path.startswith(SANDBOX_PATH + "/"):
            environment, path = "sandbox", path[len(SANDBOX_PATH):] or "/"
        elif host is not None and host[:8].lower() == b"sandbox.":
            environment = "sandbox"
        self.environment = environment
        self.path = path  # without the /sandbox prefix
        self.api: Any = None
        self.rest = ""  # the path after the API's prefix
        self.app: Any = None
        self.rate_headers: list[tuple[bytes, bytes]] = []
        self.detail: str | None = None
        self.extra: list[tuple[bytes, bytes]] | None = None
        self.api_id: str | None = None
        self.api_slug = ""
        self.app_id: str | None = None
        self.partner_id: str | None = None
        self.credential_id: str | None = None
        self.metrics: tuple[tuple[str, int], ...] | list[tuple[str, int]] = ()
        self.status = 500
        self.denial: str | None = None
        self.upstream_latency: float | None = None

    def hostname(self) -> str:
        """The host the request is for, as APIs are bound to it: lower case, no port, no `sandbox.` in front."""
        host = (self.host or b"").decode("latin-1").lower()
        if host[-1:] != "]":  # (an IPv6 literal ends in "]"; its colons are not a port)
            host = host.rpartition(":")[0] or host
        host = host.rstrip(".")  # the fully qualified form names the same host
        return host[len("sandbox."):] if host.startswith("sandbox.") else host

    def refuse(self, reason: str, detail: str | None = None, extra: list[tuple[bytes, bytes]] | None = None) -> Any:
        """Record why the request is refused; returns None, which `_admit` returns for "refused"."""
        self.denial, self.detail, self.extra = reason, detail, extra
        return None


def _has_dot_segment(path: str) -> bool:
    return any(segment in (".", "..") for segment in path.split("/"))


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _request_body(headers: list[tuple[bytes, bytes]]) -> tuple[bool, bool, bytes | None]:
    """(whether a body follows, whether it is chunked, its Content-Length) from the caller's headers."""
    length = _header(headers, b"content-length")
    chunked = length is None and _header(headers, b"transfer-encoding") is not None
    return chunked or (length is not None and length != b"0"), chunked, length


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


def stripped_headers(credential_location: str, credential_name: str) -> frozenset[bytes]:
    """Request headers never forwarded upstream for an API (computed once, in its snapshot entry)."""
    drop = set(HOP_BY_HOP) | {SECRET_HEADER, b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
                              b"forwarded", b"x-real-ip", b"x-accord-partner", b"x-accord-application"}
    if credential_location == "authorization":
        drop.add(b"authorization")
    elif credential_location == "header":
        drop.add((credential_name or "x-api-key").lower().encode())
    elif credential_location == "app-id-key":
        drop |= {b"x-app-id", b"x-app-key"}
    return frozenset(drop)


def _upstream_headers(scope: dict[str, Any], headers: list[tuple[bytes, bytes]], api: s.ApiEntry,
                      app: s.AppEntry) -> list[tuple[bytes, bytes]]:
    """The caller's headers minus what is never forwarded, plus the proxy headers and ours (Host is the upstream's)."""
    kept, host, prior = _kept_headers(headers, api.stripped_headers)
    return kept + _proxy_headers(scope, api, app, host, prior)


def _kept_headers(headers: list[tuple[bytes, bytes]],
                  drop: frozenset[bytes]) -> tuple[list[tuple[bytes, bytes]], bytes | None, bytes | None]:
    """The caller's headers that are forwarded, with its Host and first X-Forwarded-For (both never forwarded as sent).

    `drop` is the API's `stripped_headers`: it always holds Host, X-Forwarded-For and Connection.
    """
    kept: list[tuple[bytes, bytes]] = []
    prior = host = None
    hop_by_hop: set[bytes] | None = None
    for pair in headers:  # one pass: what is kept, and what the proxy headers need
        name = pair[0]
        if name not in drop:
            kept.append(pair)
        elif name == b"host":
            if host is None:  # (the first, as a server that allows several would read it)
                host = pair[1]
        elif name == b"x-forwarded-for":
            if prior is None:
                prior = pair[1]
        elif name == b"connection":  # every Connection field (there may be several) names hop-by-hop fields
            tokens = {token.strip().lower() for token in pair[1].split(b",")}
            hop_by_hop = tokens if hop_by_hop is None else hop_by_hop | tokens
    if hop_by_hop is not None:
        kept = [pair for pair in kept if pair[0] not in hop_by_hop]
    return kept, host, prior


def _proxy_headers(scope: dict[str, Any], api: s.ApiEntry, app: s.AppEntry, host: bytes | None,
                   prior: bytes | None) -> list[tuple[bytes, bytes]]:
    """The headers the gateway adds: this hop, the API's secret and, if the API wants them, who is calling.

    What the caller says about earlier hops is never trusted: X-Forwarded-For is kept with this hop
    appended (an upstream reads the last entry, the one the gateway wrote); Forwarded and X-Real-IP
    are the gateway's alone — a caller's Forwarded is not passed on, since an open quoted string in
    it would swallow the element appended after it.
    """
    client = scope.get("client")
    address = client[0].encode() if client else b""
    proto = b"https" if scope.get("scheme") == "https" else b"http"
    # (find, not `in`: bytes.__contains__ first tries its argument as an int and pays for the TypeError)
    hop = b"for=" + (b'"[' + address + b']"' if address.find(b":") >= 0 else address or b"unknown") + b";proto=" + proto
    if host and _plain_host(host):  # (a URI host may hold , ; = which naive parsers split on)
        hop += b';host="' + host + b'"'
    out = [(b"x-forwarded-for", prior + b", " + address if prior else address),
           (b"x-forwarded-proto", proto),
           (b"forwarded", hop),
           (SECRET_HEADER, api.upstream_secret.encode())]
    if address:
        out.append((b"x-real-ip", address))
    if host:
        out.append((b"x-forwarded-host", host))
    if api.forward_identity:
        out += [(b"x-accord-partner", app.partner_id.encode()), (b"x-accord-application", app.id.encode())]
    return out


_PLAIN_HOSTS: Final[dict[bytes, bool]] = {}  # Host values seen, and whether each is plain (a few per gateway)


def _plain_host(host: bytes) -> bool:
    """Whether `host` is a plain host name or IP literal with an optional port (remembered: a regex per request is dear)."""
    if len(host) > MEMO_HOST:
        return _PLAIN_HOST.fullmatch(host) is not None
    plain = _PLAIN_HOSTS.get(host)
    if plain is None:
        if len(_PLAIN_HOSTS) >= MEMO_ENTRIES:
            _PLAIN_HOSTS.clear()
        plain = _PLAIN_HOSTS[host] = _PLAIN_HOST.fullmatch(host) is not None
    return plain


def _target(scope: dict[str, Any], rest: str, api: s.ApiEntry) -> bytes:
    """The path after the API's prefix as the caller encoded it (%2F stays %2F), and the query without the key."""
    raw: bytes | None = scope.get("raw_path")
    path = None
    if raw is not None:
        routed = scope["path"]
        sandbox = routed == SANDBOX_PATH or routed.startswith(SANDBOX_PATH + "/")
        prefix = ((SANDBOX_PATH if sandbox else "") + api.prefix).encode()
        if raw.startswith(prefix):
            path = raw[len(prefix):] or b"/"
    if path is None:
        path = _quoted(rest)
    query: bytes = scope.get("query_string", b"")
    if query and api.credential_location == "query":
        name = (api.credential_name or "api_key").encode()
        query = b"&".join(part for part in query.split(b"&")
                          if unquote_to_bytes(part.split(b"=", 1)[0].replace(b"+", b" ")) != name)
    return path + b"?" + query if query else path


def _quoted(path: str) -> bytes:
    return quote(path, safe="/:@!$&'()*+,;=-._~%").encode("ascii")


class ClientGone(Exception):
    """The caller disconnected before its request body was complete: the upstream must not get a cut body."""


CLIENT_CLOSED_REQUEST = 499  # recorded (nginx's code) when the caller left mid-upload; never sent


class _Body:
    """The caller's request body as an async iterator of chunks, from ASGI `receive`.

    (A class rather than an async generator: mypyc, which compiles this module, has none.)
    """

    __slots__ = ("receive", "done")

    def __init__(self, receive: Any) -> None:
        self.receive = receive
        self.done = False

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        while not self.done:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone  # not a normal end: the body's final chunk must not be sent upstream
            self.done = not message.get("more_body")
            chunk: bytes = message.get("body", b"")
            if chunk:
                return chunk
        raise StopAsyncIteration


def _headers(content_type: bytes, body: bytes, extra: list[tuple[bytes, bytes]] | None) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra:
        headers += extra
    return headers


def _answer_headers(ctx: _Context, upstream_headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The upstream answer's headers for the caller: without hop-by-hop fields, with the RateLimit ones."""
    out = [pair for pair in upstream_headers if pair[0] not in ANSWER_HOP_BY_HOP]
    if ctx.rate_headers:
        out += ctx.rate_headers
    return out


async def _respond(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
