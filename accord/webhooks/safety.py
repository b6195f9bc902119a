"""Outbound safety: where the dispatcher may send requests.

Endpoint URLs are chosen by partners, so a delivery must not become a way to reach
the provider's own network (server-side request forgery). Unless
`settings.webhooks_allow_private` is set (tests, or an intranet install), every address
a host resolves to must be a public one: loopback, private, link-local, multicast,
unspecified and reserved addresses are refused.

The check happens where the connection is made: `GuardedResolver` is the aiohttp
resolver, so the addresses checked are exactly the addresses connected to (a DNS answer
that changes between a check and the connection cannot slip through). aiohttp does not
call the resolver for IP literals, so `refuse_literal_host` checks those first.
"""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver


class RefusedDestination(OSError):
    """The URL's host is (or resolves to) an address deliveries must not reach."""


def refusal_reason(address: str) -> str | None:
    """Why deliveries may not go to this IP address, or None if it is a public address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    checks = [(ip.is_loopback, "a loopback address"), (ip.is_link_local, "a link-local address"),
              (ip.is_multicast, "a multicast address"), (ip.is_unspecified, "an unspecified address"),
              (ip.is_private, "a private address"), (not ip.is_global, "a reserved address")]
    return next((reason for refused, reason in checks if refused), None)


def _ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def refuse_literal_host(host: str) -> None:
    """Raise RefusedDestination if `host` is an IP literal that is not public (or `localhost`)."""
    if host.rstrip(".").lower() == "localhost" or host.lower().endswith(".localhost"):
        raise RefusedDestination(f"{host} is a loopback address")
    literal = _ip_literal(host)
    if literal is not None and (reason := refusal_reason(literal)):
        raise RefusedDestination(f"{host} is {reason}")


def url_problem(url: str, *, allow_http: bool, allow_private: bool) -> str | None:
    """Why `url` cannot be a webhook endpoint, or None. Hosts that are names are checked at delivery."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    schemes = {"https", "http"} if allow_http else {"https"}
    if parts.scheme not in schemes:
        return "must be an https:// URL" + (" or an http:// URL" if allow_http else "")
    if not parts.hostname:
        return "must name a host"
    if port == 0:
        return "must not use port 0"
    if any(ch.isspace() for ch in url):
        return "must not contain spaces"
    try:
        parts.hostname.encode("idna")
    except UnicodeError:
        return "has an invalid host name"
    if not allow_private:
        try:
            refuse_literal_host(parts.hostname)
        except RefusedDestination as exc:
            return f"must be a public address ({exc})"
    return None


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing hosts that resolve to a non-public address (any of them)."""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private
        self._inner = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not self.allow_private:
            for result in results:
                reason = refusal_reason(result["host"])
                if reason:
                    raise RefusedDestination(f"{host} resolves to {result['host']}, {reason}")
        return results

    async def close(self) -> None:
        await self._inner.close()
