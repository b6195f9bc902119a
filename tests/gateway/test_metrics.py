"""The gateway's Prometheus page, parsed back line by line as a scraper would."""
from __future__ import annotations

import math
import re

import pytest

from accord.gateway.metrics import LATENCY_BUCKETS, GatewayMetrics

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def _unescape(value: str) -> str:
    return re.sub(r'\\(.)', lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], value)


def parse(page: bytes) -> tuple[dict[str, str], dict[str, str], dict[tuple[str, frozenset], float]]:
    """(help by family, type by family, value by (name, labels)); asserts the format's rules on the way."""
    text = page.decode("utf-8")
    assert text.endswith("\n")
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    samples: dict[tuple[str, frozenset], float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, doc = line[len("# HELP "):].partition(" ")
            assert name not in helps, f"second HELP for {name}"
            helps[name] = doc
        elif line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE "):].partition(" ")
            assert kind in {"counter", "gauge", "histogram"} and name not in types
            types[name] = kind
        else:
            match = _SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, raw_labels, value = match.groups()
            labels: list[tuple[str, str]] = []
            if raw_labels:
                consumed = 0
                for label in _LABEL.finditer(raw_labels):
                    assert label.start() == consumed, f"bad labels in {line!r}"
                    labels.append((label.group(1), _unescape(label.group(2))))
                    consumed = label.end()
                assert consumed == len(raw_labels), f"bad labels in {line!r}"
            family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
            assert family in types, f"{name} has no TYPE before it"
            key = (name, frozenset(labels))
            assert key not in samples, f"duplicate sample {line!r}"
            samples[key] = float(value)
    return helps, types, samples


def test_a_fresh_page_has_every_family_at_zero() -> None:
    helps, types, samples = parse(GatewayMetrics().render({}))
    assert types == {"accord_gateway_requests_total": "counter", "accord_gateway_denials_total": "counter",
                     "accord_gateway_upstream_latency_seconds": "histogram"}
    assert set(helps) == set(types)
    assert samples[("accord_gateway_upstream_latency_seconds_count", frozenset())] == 0
    assert samples[("accord_gateway_upstream_latency_seconds_bucket", frozenset({("le", "+Inf")}))] == 0


def test_requests_denials_latency_and_gauges_are_rendered() -> None:
    metrics = GatewayMetrics()
    metrics.observe_request("social", 200, None, 0.0005)
    metrics.observe_request("social", 201, None, 0.001)  # exactly on a bound: counted in it (le)
    metrics.observe_request("social", 502, None, 12.0)  # above the last bound: only +Inf
    metrics.observe_request("social", 429, "limit-reached", None)
    metrics.observe_request("social", 429, "limit-reached", None)
    metrics.observe_request(None, 404, "no-route", None)
    metrics.observe_request('we"ird\\api\n', 302, None, 0.3)
    metrics.observe_request("social", 200, None, float("nan"))  # not a measurement: not observed

    helps, types, samples = parse(metrics.render({
        "accord_gateway_flush_lag_seconds": 1.25,
        "accord_gateway_snapshot_version": 42,
        "snapshot_age_seconds": 3.5,  # the prefix may be left out
        "accord_gateway_limiter_unavailable_total": 7,
    }))

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    requests = "accord_gateway_requests_total"
    assert value(requests, api="social", status_class="2xx") == 3
    assert value(requests, api="social", status_class="5xx") == 1
    assert value(requests, api="social", status_class="4xx") == 2
    assert value(requests, api="", status_class="4xx") == 1
    assert value(requests, api='we"ird\\api\n', status_class="3xx") == 1  # escaped and read back intact
    assert value("accord_gateway_denials_total", reason="limit-reached") == 2
    assert value("accord_gateway_denials_total", reason="no-route") == 1

    latency = "accord_gateway_upstream_latency_seconds"
    buckets = {float(dict(labels)["le"]): count for (name, labels), count in samples.items()
               if name == f"{latency}_bucket"}
    assert sorted(buckets) == [*LATENCY_BUCKETS, math.inf]
    assert buckets[0.001] == 2 and buckets[0.25] == 2 and buckets[0.5] == 3 and buckets[10.0] == 3
    assert buckets[math.inf] == value(f"{latency}_count") == 4
    counts = [buckets[bound] for bound in sorted(buckets)]
    assert counts == sorted(counts)  # cumulative
    assert value(f"{latency}_sum") == pytest.approx(0.0005 + 0.001 + 12.0 + 0.3)

    assert value("accord_gateway_flush_lag_seconds") == 1.25
    assert value("accord_gateway_snapshot_version") == 42
    assert value("accord_gateway_snapshot_age_seconds") == 3.5
    assert value("accord_gateway_limiter_unavailable_total") == 7
    assert types["accord_gateway_flush_lag_seconds"] == "gauge"
    assert types["accord_gateway_limiter_unavailable_total"] == "counter"
    assert helps["accord_gateway_snapshot_version"].startswith("Version of the program snapshot")


def test_a_malformed_gauge_name_is_refused() -> None:
    with pytest.raises(ValueError, match="not a Prometheus metric name"):
        GatewayMetrics().render({"flush lag": 1.0})
