"""The gateway's Prometheus metrics, in the text exposition format 0.0.4, written by hand.

`GatewayMetrics.observe_request` is called once per request: a few dict and list
updates, no locks (the gateway is one event loop), no client library. `render` builds
the page served at `/metrics`; gauges owned by other parts of the gateway (the
recorder's flush lag, the snapshot's version and age, the limiter) are passed in.
"""
from __future__ import annotations

import math
import re
from bisect import bisect_left
from typing import Final

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "accord_gateway_"

# Upper bounds in seconds, 1 ms … 10 s; +Inf is implied.
LATENCY_BUCKETS: Final[tuple[float, ...]] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Help for the gauges other components report through `render(extra_gauges)`.
KNOWN_GAUGES: dict[str, str] = {
    "accord_gateway_flush_lag_seconds": "Age of the oldest unflushed usage record at the last flush.",
    "accord_gateway_snapshot_version": "Version of the program snapshot being served.",
    "accord_gateway_snapshot_age_seconds": "Seconds since the program snapshot being served was built.",
    "accord_gateway_limiter_unavailable_total": "Requests for which the rate limiter could not be reached.",
}

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


_CLASSES: Final = ("5xx", "1xx", "2xx", "3xx", "4xx", "5xx")


def status_class(status: int) -> str:
    """`2xx` … `5xx` (1xx for protocol upgrades); a status out of range counts as 5xx."""
    hundreds = status // 100
    return _CLASSES[hundreds] if 1 <= hundreds <= 5 else "5xx"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _bound(value: float) -> str:
    return "+Inf" if math.isinf(value) else repr(value)


class GatewayMetrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = {}  # (api slug, status class) -> count
        self.denials: dict[str, int] = {}  # reason -> count
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # per bucket, not cumulative; last is +Inf
        self.latency_sum = 0.0
        self.latency_count = 0

    def observe_request(self, api_slug: str | None, status: int, denial: str | None,
                        upstream_latency: float | None) -> None:
        """Count one answered request; `upstream_latency` (seconds) only when the upstream was called."""
        key = (api_slug or "", status_class(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        if denial:
            self.denials[denial] = self.denials.get(denial, 0) + 1
        if upstream_latency is not None and upstream_latency >= 0:  # also skips NaN
            self.latency_buckets[bisect_left(LATENCY_BUCKETS, upstream_latency)] += 1
            self.latency_sum += upstream_latency
            self.latency_count += 1

    def render(self, extra_gauges: dict[str, float] | None = None) -> bytes:
        """The exposition page. `extra_gauges` maps a metric name (with or without the
        `accord_gateway_` prefix) to its current value; a name ending in `_total` is typed counter."""
        lines: list[str] = []

        lines += ["# HELP accord_gateway_requests_total Requests answered by the gateway.",
                  "# TYPE accord_gateway_requests_total counter"]
        for (api, klass), count in sorted(self.requests.items()):
            lines.append(f'accord_gateway_requests_total{{api="{_label(api)}",status_class="{klass}"}} {count}')

        lines += ["# HELP accord_gateway_denials_total Requests the gateway refused, by reason.",
                  "# TYPE accord_gateway_denials_total counter"]
        for reason, count in sorted(self.denials.items()):
            lines.append(f'accord_gateway_denials_total{{reason="{_label(reason)}"}} {count}')

        name = "accord_gateway_upstream_latency_seconds"
        lines += [f"# HELP {name} Time the upstream took to answer.", f"# TYPE {name} histogram"]
        cumulative = 0
        for bound, count in zip((*LATENCY_BUCKETS, math.inf), self.latency_buckets):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{_bound(bound)}"}} {cumulative}')
        lines += [f"{name}_sum {_number(self.latency_sum)}", f"{name}_count {self.latency_count}"]

        for raw_name, value in sorted((extra_gauges or {}).items()):
            name = raw_name if raw_name.startswith(PREFIX) else PREFIX + raw_name
            if not _METRIC_NAME.match(name):
                raise ValueError(f"not a Prometheus metric name: {raw_name!r}")
            kind = "counter" if name.endswith("_total") else "gauge"
            lines += [f"# HELP {name} {_help(KNOWN_GAUGES.get(name, name.removeprefix(PREFIX).replace('_', ' ')))}",
                      f"# TYPE {name} {kind}", f"{name} {_number(value)}"]

        return ("\n".join(lines) + "\n").encode()
