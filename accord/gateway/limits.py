"""Exact rate limits: fixed, calendar-aligned windows counted in memory or in Redis.

A request arrives with a list of `LimitCheck`s (one per limit that applies to
it: per application and metric, maybe per end user, one per period). Every
check is evaluated and consumed atomically: if any check would go over its
limit nothing is consumed, otherwise every counter grows by its delta. A
denied request therefore costs the client nothing.

Windows are calendar-aligned in UTC (see `accord.gateway.periods`) and the
window's start is part of each counter's identity, so a new window simply
starts at zero; the clock is injected so tests can cross any boundary.

`MemoryLimiter` counts in plain dicts (one process; the check-and-consume is
synchronous so coroutines cannot interleave inside it). `RedisLimiter` counts
in Redis with one Lua script per request (one round trip, atomic), so the
count is exact across every gateway process sharing that Redis. When Redis is
unreachable it either falls back to a per-process `MemoryLimiter` ("open") or
raises `LimiterUnavailable` ("closed"), and goes back to Redis by itself.

The `RateLimit-Policy` / `RateLimit` header items follow the structured-field
form of draft-ietf-httpapi-ratelimit-headers (-08 and later):
`RateLimit-Policy: "hits-minute";q=60;w=60` and `RateLimit: "hits-minute";r=41;t=17`.
"""
from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from heapq import heappop, heappush
from typing import Final

from redis.exceptions import BusyLoadingError, NoScriptError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from accord.gateway.periods import ETERNITY_END, window
from accord.gateway.resp import RespClient

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


class LimitCheck:
    """One limit a request must fit: `delta` more units of the counter `key` in its `period`'s window.

    The gateway shares one tuple of checks between the requests of the same shape (accord.gateway.proxy,
    `_limit_plan`); what a check says never changes once made. It remembers the memory limiter's counter
    for the window it was last asked about (`counter`), so within a window that counter's identity is
    made once, not per request, and a dict finds it by identity.
    """

    __slots__ = ("key", "period", "limit", "delta", "_start", "_end", "_counter")

    def __init__(self, key: str, period: str, limit: int, delta: int) -> None:
        self.key = key  # the counter without the window, e.g. f"{app_id}|{metric_id}" or with "|u:{end_user}"
        self.period = period  # second minute hour day week month year eternity
        self.limit = limit  # allowed units per window (0 = nothing allowed)
        self.delta = delta  # units this request would consume (>= 0)
        self._start = 0  # the window last asked about: [start, end) epoch seconds (none yet)
        self._end = 0
        self._counter = (key, period, 0)

    def counter(self, now: float) -> tuple[str, str, int]:
        """The memory limiter's counter for the window containing `now`: (key, period, window start)."""
        if not self._start <= now < self._end:
            self._start, self._end = window(self.period, now)
            self._counter = (self.key, self.period, self._start)
        return self._counter

    def bounds(self, now: float) -> tuple[int, int]:
        """The [start, end) of the window containing `now` (as `accord.gateway.periods.window`)."""
        if not self._start <= now < self._end:
            self.counter(now)
        return self._start, self._end

    def __repr__(self) -> str:
        return f"LimitCheck({self.key!r}, {self.period!r}, {self.limit}, {self.delta})"


class LimitDecision:
    """The outcome of one request against all its checks.

    It describes one check: when allowed, the tightest (least remaining after
    this request; ties: the window that resets first); when denied, the failing
    check the client has to wait longest for (ties: the first in the list), so
    `retry_after`, `reset`, `exceeded_key` and the headers all speak of it.

    A plain class, not a dataclass: one is made per request, and under mypyc a dataclass's
    generated __init__ stays interpreted Python (bench/README.md, session 6).
    """

    __slots__ = ("allowed", "limit", "remaining", "reset", "period", "retry_after", "exceeded_key", "window", "key",
                 "used", "check")

    def __init__(self, allowed: bool, limit: int, remaining: int, reset: int, period: str, retry_after: int | None,
                 exceeded_key: str | None, window: int | None = None, key: str | None = None,
                 used: tuple[int, ...] = (), check: LimitCheck | None = None) -> None:
        self.allowed = allowed
        self.limit = limit
        self.remaining = remaining  # units left in that window after this request (0 when denied)
        self.reset = reset  # whole seconds until that window resets (ceil); eternity: seconds until ETERNITY_END
        self.period = period
        self.retry_after = retry_after  # when denied: seconds until the request could pass (None when allowed)
        self.exceeded_key = exceeded_key  # when denied: the key of the failing check described here
        self.window = window  # the window's length in seconds (a month: 28–31 days); None for eternity
        self.key = key  # the key of the check described here (allowed or denied)
        self.used = used  # when allowed: each check's count after this request, in the order given
        self.check = check  # the check described here

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"LimitDecision({fields})"

    @property
    def policy(self) -> str:
        """RateLimit-Policy item named "{key}-{period}" (built on demand: the gateway names it by metric)."""
        return policy_item(f"{self.key}-{self.period}", self.limit, self.window) if self.key else ""


NO_LIMITS: Final = LimitDecision(allowed=True, limit=-1, remaining=-1, reset=0, period="",
                          retry_after=None, exceeded_key=None, window=None)
"""The decision for a request with no checks: allowed; limit = remaining = -1 means "send no RateLimit headers"."""


class LimiterUnavailable(Exception):
    """Redis is unreachable and the limiter fails closed: the request must not pass (answer 503)."""


# --- RateLimit header items -------------------------------------------------------------------

def sf_string(value: str) -> str:
    """`value` as a structured-field String (RFC 8941 §3.3.3).

    Backslash and double quote are escaped; characters outside printable ASCII
    (not allowed in an sf-string) become "?".
    """
    if value.isascii() and value.isprintable():
        cleaned = value
    else:
        cleaned = "".join(ch if " " <= ch <= "~" else "?" for ch in value)
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


def policy_item(name: str, limit: int, period_seconds: int | None) -> str:
    """A RateLimit-Policy item: `"name";q=<limit>;w=<seconds>`.

    `w` is left out when the window has no length (eternity: pass None), as the draft allows.
    """
    item = f"{sf_string(name)};q={max(limit, 0)}"
    if period_seconds:
        item += f";w={period_seconds}"
    return item


def ratelimit_item(name: str, remaining: int, reset: int | None) -> str:
    """A RateLimit item: `"name";r=<remaining>;t=<seconds until reset>`.

    Pass reset=None to leave `t` out, e.g. for an eternity window (`decision.window is None`).
    """
    return ratelimit_item_quoted(sf_string(name), remaining, reset)


def ratelimit_item_quoted(quoted_name: str, remaining: int, reset: int | None) -> str:
    """`ratelimit_item` for a name already made an sf-string (the gateway keeps those per policy)."""
    item = f"{quoted_name};r={max(remaining, 0)}"
    if reset is not None:
        item += f";t={max(reset, 0)}"
    return item


# --- the decision, shared by both limiters ----------------------------------------------------

def _decide(checks: Sequence[LimitCheck], afters: Sequence[int], windows: Sequence[tuple[int, int]],
            now: float, allowed: bool) -> LimitDecision:
    """Build the decision from each check's count after this request (as if it were consumed)."""
    if allowed:
        chosen = 0
        best_remaining = checks[0].limit - afters[0]
        for i in range(1, len(checks)):
            remaining = checks[i].limit - afters[i]
            if remaining < best_remaining or (remaining == best_remaining and windows[i][1] < windows[chosen][1]):
                chosen, best_remaining = i, remaining
    else:
        chosen = -1
        for i, check in enumerate(checks):
            if afters[i] > check.limit and (chosen < 0 or windows[i][1] > windows[chosen][1]):
                chosen = i
        best_remaining = 0
    check = checks[chosen]
    start, end = windows[chosen]
    reset = math.ceil(end - now)
    length = None if check.period == "eternity" else end - start
    return LimitDecision(
        allowed=allowed,
        limit=check.limit,
        remaining=best_remaining,
        reset=reset,
        period=check.period,
        retry_after=None if allowed else reset,
        exceeded_key=None if allowed else check.key,
        window=length,
        key=check.key,
        used=tuple(afters) if allowed else (),
        check=check,
    )


def _each_counter_once(checks: Sequence[LimitCheck]) -> bool:
    """Whether no two checks name the same counter (key and period): compared pairwise, as there are few."""
    for i in range(1, len(checks)):
        check = checks[i]
        for j in range(i):
            other = checks[j]
            if check.period == other.period and check.key == other.key:
                return False
    return True


def _totals(checks: Sequence[LimitCheck]) -> dict[tuple[str, str], int]:
    """Delta per counter: a counter named twice in one request counts both deltas."""
    totals: dict[tuple[str, str], int] = {}
    for check in checks:
        ident = (check.key, check.period)
        totals[ident] = totals.get(ident, 0) + check.delta
    return totals


# --- in memory --------------------------------------------------------------------------------

class MemoryLimiter:
    """Exact limits for one process, in plain dicts; O(number of checks) per call.

    Counters are keyed by (key, period, window start), like the Redis keys, so
    a new window starts at zero. Like the Redis keys they are kept
    `expiry_margin` seconds past their window's end (a clock stepping back a
    little finds its old window), then dropped a bounded batch at a time,
    keeping memory proportional to the counters of live windows.
    """

    def __init__(self, clock: Clock = time.time, *, prune_batch: int = 1000, expiry_margin: int = 60) -> None:
        self._clock = clock
        self._prune_batch = prune_batch
        self._expiry_margin = expiry_margin
        self._counters: dict[tuple[str, str, int], int] = {}
        self._expiring: dict[int, list[tuple[str, str, int]]] = {}  # expiry time -> counters expiring then
        self._expiries: list[int] = []  # heap of the keys of _expiring

    def __len__(self) -> int:
        """How many counters are held (live windows, plus expired ones not yet pruned)."""
        return len(self._counters)

    async def consume(self, checks: Sequence[LimitCheck]) -> LimitDecision:
        return self.consume_now(checks)

    def consume_now(self, checks: Sequence[LimitCheck]) -> LimitDecision:
        """Check and consume synchronously: nothing can interleave between the check and the increment."""
        if not checks:
            return NO_LIMITS
        now = self._clock()
        if self._expiries and self._expiries[0] <= now:
            self._prune(now)
        if not _each_counter_once(checks):
            return self._consume_merged(checks, now)
        # The usual request names each counter once: one pass reads them all, a second (if every
        # check fits) writes them.
        counters = self._counters
        afters: list[int] = []
        new: list[bool] = []
        allowed = True
        for check in checks:
            used = counters.get(check.counter(now))
            after = check.delta if used is None else used + check.delta
            afters.append(after)
            new.append(used is None)
            if after > check.limit:
                allowed = False
        windows = [check.bounds(now) for check in checks]
        if allowed:
            for i in range(len(afters)):
                ident = checks[i].counter(now)
                if new[i] and windows[i][1] != ETERNITY_END:
                    self._expire_at(windows[i][1] + self._expiry_margin, ident)
                counters[ident] = afters[i]
        return _decide(checks, afters, windows, now, allowed)

    def _consume_merged(self, checks: Sequence[LimitCheck], now: float) -> LimitDecision:
        """`consume_now` for checks naming a counter more than once: each sees the deltas summed."""
        counters = self._counters
        totals = _totals(checks)
        windows = [window(check.period, now) for check in checks]
        afters: list[int] = []
        allowed = True
        for check, (start, _) in zip(checks, windows):
            after = counters.get((check.key, check.period, start), 0) + totals[(check.key, check.period)]
            afters.append(after)
            if after > check.limit:
                allowed = False
        if allowed:
            for check, (start, end) in zip(checks, windows):
                total = totals.pop((check.key, check.period), None)  # popped: a duplicate check adds once
                if total is None:
                    continue
                ident = (check.key, check.period, start)
                used = counters.get(ident)
                if used is None:
                    counters[ident] = total
                    if end != ETERNITY_END:
                        self._expire_at(end + self._expiry_margin, ident)
                else:
                    counters[ident] = used + total
        return _decide(checks, afters, windows, now, allowed)

    def _expire_at(self, expiry: int, ident: tuple[str, str, int]) -> None:
        bucket = self._expiring.get(expiry)
        if bucket is None:
            bucket = self._expiring[expiry] = []
            heappush(self._expiries, expiry)
        bucket.append(ident)

    def _prune(self, now: float) -> None:
        """Drop expired counters, at most `prune_batch` per call so no request stalls."""
        budget = self._prune_batch
        while self._expiries and self._expiries[0] <= now and budget > 0:
            expiry = self._expiries[0]
            bucket = self._expiring[expiry]
            take = min(budget, len(bucket))
            for ident in bucket[len(bucket) - take:]:
                del self._counters[ident]
            del bucket[len(bucket) - take:]
            budget -= take
            if not bucket:
                heappop(self._expiries)
                del self._expiring[expiry]


# --- in Redis ---------------------------------------------------------------------------------

# KEYS: one counter per check (a key may repeat). ARGV: limit, delta, ttl per check
# (ttl 0 = never expires). Reads every counter, decides, and only if every check
# fits increments each distinct counter once by its summed delta. Returns
# {allowed (1/0), count before this request for each check...}.
_SCRIPT = """
local used, total, order = {}, {}, {}
for i = 1, #KEYS do
  local key = KEYS[i]
  if used[key] == nil then
    used[key] = tonumber(redis.call('GET', key) or '0')
    total[key] = 0
    order[#order + 1] = i
  end
  total[key] = total[key] + tonumber(ARGV[3 * i - 1])
end
local allowed = 1
for i = 1, #KEYS do
  if used[KEYS[i]] + total[KEYS[i]] > tonumber(ARGV[3 * i - 2]) then
    allowed = 0
  end
end
if allowed == 1 then
  for _, i in ipairs(order) do
    local key = KEYS[i]
    if total[key] > 0 then
      redis.call('INCRBY', key, total[key])
      local ttl = tonumber(ARGV[3 * i])
      if ttl > 0 then
        redis.call('EXPIRE', key, ttl)
      end
    end
  end
end
local reply = {allowed}
for i = 1, #KEYS do
  reply[i + 1] = used[KEYS[i]]
end
return reply
"""
_SCRIPT_SHA = hashlib.sha1(_SCRIPT.encode()).hexdigest()

# Errors meaning "Redis cannot answer now" (not a bug): refused/reset connections,
# timeouts, a server still loading its data, a failed-over master that became a replica.
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, BusyLoadingError, OSError)


class RedisLimiter:
    """Exact limits across processes: one atomic Lua script per request in Redis.

    Counter keys are `{key_prefix}{check.key}|{period}|{window start}` and
    expire `expiry_margin` seconds after their window ends (eternity: never).
    Window bounds come from the injected clock, so gateways need synchronised
    clocks (NTP); a skewed one counts into a neighbouring window near a boundary.

    Calls go over one pipelined connection per process (accord.gateway.resp), never
    retried: the script is not idempotent, and a retried timeout could count one
    request twice. A call unanswered after `timeout` fails (with every call then in
    flight on that connection) and counts as an outage.

    While Redis is unreachable each decision is made without it: with
    `on_unavailable="open"` by a per-process `MemoryLimiter`, with "closed" by
    raising `LimiterUnavailable`. Every such decision adds 1 to
    `unavailable_total`; the outage is logged once when it starts and once
    when it ends. Redis is retried at most every `retry_interval` seconds (by a
    single request; the others keep using the fallback meanwhile), so a dead
    Redis costs one connect timeout per interval, not one per request.
    """

    def __init__(self, url: str, *, on_unavailable: str = "open", clock: Clock = time.time,
                 key_prefix: str = "accord:rl:", connect_timeout: float = 0.5, timeout: float = 2.0,
                 retry_interval: float = 1.0, expiry_margin: int = 60, max_connections: int = 50,
                 pool_timeout: float = 2.0) -> None:
        if on_unavailable not in ("open", "closed"):
            raise ValueError(f"on_unavailable must be 'open' or 'closed', not {on_unavailable!r}")
        # One pipelined connection (accord.gateway.resp): calls in flight need no pool.
        # `max_connections` and `pool_timeout` are accepted for compatibility and unused.
        self._client = RespClient(url, connect_timeout=connect_timeout, timeout=timeout)
        self._fail_open = on_unavailable == "open"
        self._clock = clock
        self._prefix = key_prefix
        self._retry_interval = retry_interval
        self._expiry_margin = expiry_margin
        self._fallback = MemoryLimiter(clock, expiry_margin=expiry_margin)
        self._down_since: float | None = None  # monotonic time the current outage began
        self._retry_at = 0.0
        self._where = self._client.where
        self.unavailable_total = 0

    @property
    def available(self) -> bool:
        """False from a failed call until a call reaches Redis again."""
        return self._down_since is None

    def counter_key(self, check: LimitCheck, now: float) -> str:
        """The Redis key counting `check` in the window containing `now`."""
        return f"{self._prefix}{check.key}|{check.period}|{window(check.period, now)[0]}"

    async def consume(self, checks: Sequence[LimitCheck]) -> LimitDecision:
        if not checks:
            return NO_LIMITS
        if self._down_since is not None:
            moment = time.monotonic()
            if moment < self._retry_at:
                return self._without_redis(checks)
            self._retry_at = moment + self._retry_interval  # this call probes; the others keep to the fallback
        now = self._clock()
        windows = [window(check.period, now) for check in checks]
        keys: list[str] = []
        args: list[int] = []
        for check, (start, end) in zip(checks, windows):
            keys.append(f"{self._prefix}{check.key}|{check.period}|{start}")
            ttl = 0 if check.period == "eternity" else math.ceil(end - now) + self._expiry_margin
            args += (check.limit, check.delta, ttl)
        try:
            reply = await self._run(keys, args)
        except _UNAVAILABLE as exc:
            await self._went_down(exc)
            return self._without_redis(checks)
        if self._down_since is not None:
            self._came_back()
        totals = _totals(checks)
        afters = [int(used) + totals[(check.key, check.period)] for check, used in zip(checks, reply[1:])]
        return _decide(checks, afters, windows, now, reply[0] == 1)

    async def _run(self, keys: list[str], args: list[int]) -> list[int]:
        try:
            return await self._client.call("EVALSHA", _SCRIPT_SHA, len(keys), *keys, *args)
        except NoScriptError:  # a restarted or flushed Redis: EVAL runs it and caches it again
            return await self._client.call("EVAL", _SCRIPT, len(keys), *keys, *args)

    def _without_redis(self, checks: Sequence[LimitCheck]) -> LimitDecision:
        self.unavailable_total += 1
        if not self._fail_open:
            raise LimiterUnavailable(f"rate-limit store unreachable at {self._where}")
        return self._fallback.consume_now(checks)

    async def _went_down(self, exc: BaseException) -> None:
        moment = time.monotonic()
        if self._down_since is None:
            self._down_since = moment
            self._retry_at = moment + self._retry_interval
            logger.warning("Rate-limit Redis at %s unavailable (%s: %s); %s until it is back", self._where,
                           type(exc).__name__, exc,
                           "counting per process" if self._fail_open else "refusing limited requests")
        # The connection is dead or out of step: the next probe connects afresh.
        await self._client.reset()

    def _came_back(self) -> None:
        outage = time.monotonic() - (self._down_since or 0.0)
        self._down_since = None
        logger.warning("Rate-limit Redis at %s reachable again after %.1f s (%d decisions made without it so far)",
                       self._where, outage, self.unavailable_total)

    async def close(self) -> None:
        await self._client.close()
