"""The usage counted in memory since the last flush: the hot half of accord.gateway.recorder.

`Tally.record` runs once per request, synchronously and without I/O. It lives apart from the
recorder (which writes with SQLAlchemy and stays plain Python) so that it is compiled with the
rest of the request path (accord.gateway.native): the gateway calls it as compiled code calls
compiled code, with no Python frame per request (bench/README.md, session 6).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from accord.gateway.metrics import status_class

# A latency outside [0, one day) is a clock glitch, not a measurement: counted as 0.
_MAX_LATENCY_SECONDS: Final = 86_400.0

# (partner id, application id, api id, metric id or None for the request row,
#  environment, minute as epoch seconds, status class, denial reason or "")
CounterKey = tuple[str | None, str | None, str | None, str | None, str | None, int, str, str]
FirstCall = tuple[float, str | None, str | None, str | None]  # (at, partner id, api id, environment)


class Counter:
    """One counter's totals: requests, units, and latency (ms) summed and at most.

    A class with typed fields, not a list: compiled, adding to it allocates nothing.
    """

    __slots__ = ("count", "units", "ms_sum", "ms_max")

    def __init__(self, count: int, units: int, ms_sum: float, ms_max: float) -> None:
        self.count = count
        self.units = units
        self.ms_sum = ms_sum
        self.ms_max = ms_max


class Batch:
    """What has been counted and not yet written."""

    __slots__ = ("counters", "first_calls", "last_used", "thresholds", "oldest")

    def __init__(self) -> None:
        self.counters: dict[CounterKey, Counter] = {}
        self.first_calls: dict[str, FirstCall] = {}  # application id -> its first admitted call
        self.last_used: dict[str, float] = {}  # credential id -> epoch seconds
        self.thresholds: list[dict[str, Any]] = []  # usage.limit_threshold event rows
        self.oldest: float | None = None  # when the oldest record in here was made

    def __bool__(self) -> bool:
        return bool(self.counters or self.first_calls or self.last_used or self.thresholds)


class Tally:
    """Counts requests into the pending `Batch`; the recorder takes it (`take`) to write it.

    At most `max_pending_keys` distinct counters are held, counting those a flush is writing
    (`in_flight_keys`); while that bound is reached, a request that would need a new counter is
    not counted but tallied in `dropped_increments`.
    """

    def __init__(self, clock: Callable[[], float], max_pending_keys: int) -> None:
        self.clock = clock
        self.max_pending_keys = max_pending_keys
        self.pending = Batch()
        self.in_flight_keys = 0  # counters taken by a flush that is writing them
        self.dropped_increments = 0
        self.apps_with_first_call: set[str] = set()  # loaded at start: first calls already stored

    @property
    def pending_keys(self) -> int:
        return len(self.pending.counters) + self.in_flight_keys

    def record(self, application_id: str | None, partner_id: str | None, api_id: str | None,
               environment: str | None, metrics: Sequence[tuple[str, int]], status: int, denial: str | None,
               latency: float, credential_id: str | None = None) -> None:
        """Count one request. `metrics` are the (metric id, delta) of the matched rules; () if none matched."""
        now = self.clock()
        pending = self.pending
        if pending.oldest is None:
            pending.oldest = now
        minute = int(now // 60) * 60
        klass = status_class(status)
        reason = denial or ""
        latency_ms = latency * 1000.0 if 0.0 <= latency < _MAX_LATENCY_SECONDS else 0.0

        self._count((partner_id, application_id, api_id, None, environment, minute, klass, reason), 0, latency_ms)
        if metrics:
            if len(metrics) > 1:  # two rules may map to one metric: one request, deltas added
                merged: dict[str, int] = {}
                for metric_id, delta in metrics:
                    merged[metric_id] = merged.get(metric_id, 0) + delta
                metrics = tuple(merged.items())
            for metric_id, delta in metrics:
                self._count((partner_id, application_id, api_id, metric_id, environment, minute, klass, reason),
                            delta, latency_ms)

        if credential_id is not None and now > pending.last_used.get(credential_id, 0.0):
            pending.last_used[credential_id] = now
        if (application_id is not None and not reason and 200 <= status < 400
                and application_id not in self.apps_with_first_call):
            self.apps_with_first_call.add(application_id)
            pending.first_calls[application_id] = (now, partner_id, api_id, environment)

    def _count(self, key: CounterKey, units: int, latency_ms: float) -> None:
        counters = self.pending.counters
        counter = counters.get(key)
        if counter is None:
            if len(counters) + self.in_flight_keys >= self.max_pending_keys:
                self.dropped_increments += 1
                return
            counters[key] = Counter(1, units, latency_ms, latency_ms)
            return
        counter.count += 1
        counter.units += units
        counter.ms_sum += latency_ms
        if latency_ms > counter.ms_max:
            counter.ms_max = latency_ms

    def note(self, event_row: dict[str, Any], now: float) -> None:
        """Keep an event row (a limit threshold crossed) for the next flush."""
        pending = self.pending
        pending.thresholds.append(event_row)
        if pending.oldest is None:
            pending.oldest = now

    def take(self) -> Batch:
        """Everything counted so far, for a flush to write; counting goes on into a fresh batch."""
        batch, self.pending = self.pending, Batch()
        self.in_flight_keys = len(batch.counters)
        return batch

    def written(self) -> None:
        """The flush that took the last batch is over (written, or put back)."""
        self.in_flight_keys = 0

    def put_back(self, batch: Batch) -> None:
        """A batch a flush could not write, merged with what was counted meanwhile (retried next time)."""
        pending = self.pending
        for key, taken in batch.counters.items():
            counter = pending.counters.get(key)
            if counter is None:
                pending.counters[key] = taken
            else:
                counter.count += taken.count
                counter.units += taken.units
                counter.ms_sum += taken.ms_sum
                counter.ms_max = max(counter.ms_max, taken.ms_max)
        for app_id, first in batch.first_calls.items():
            newer = pending.first_calls.get(app_id)
            if newer is None or first[0] < newer[0]:
                pending.first_calls[app_id] = first
        for credential_id, seen in batch.last_used.items():
            if seen > pending.last_used.get(credential_id, 0.0):
                pending.last_used[credential_id] = seen
        pending.thresholds[:0] = batch.thresholds
        if batch.oldest is not None and (pending.oldest is None or batch.oldest < pending.oldest):
            pending.oldest = batch.oldest
