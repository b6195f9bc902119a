"""One HTTP attempt: POST a signed body and report what happened, never raising.

Bounded on every side, because the other end is chosen by partners: a connect timeout
and a total timeout, at most `MAX_RESPONSE_BYTES` of the answer read (the rest is
dropped with the connection), redirects not followed (a 3xx is a failed attempt), and
the destination checked by `accord.webhooks.safety`.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

from accord.webhooks.safety import GuardedResolver, RefusedDestination, url_problem

MAX_RESPONSE_BYTES = 64 * 1024
EXCERPT_BYTES = 1024
USER_AGENT = "Accord-Webhooks/1.0"
_PRIVATE_HINT = "; deliveries go to public addresses only (ACCORD_WEBHOOKS_ALLOW_PRIVATE=true allows others)"


@dataclass(frozen=True)
class Outcome:
    succeeded: bool
    status_code: int | None
    latency_ms: int
    response_excerpt: str = ""
    error: str = ""


def _text(data: bytes) -> str:
    # PostgreSQL text cannot hold NUL; an answer may contain anything.
    return data[:EXCERPT_BYTES].decode("utf-8", errors="replace").replace("\x00", "\ufffd")


class Sender:
    """Holds the one long-lived HTTP client session of a dispatcher."""

    def __init__(self, *, timeout: float, connect_timeout: float, allow_http: bool, allow_private: bool,
                 concurrency: int) -> None:
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.allow_http = allow_http
        self.allow_private = allow_private
        self.concurrency = concurrency
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(allow_private=self.allow_private),
                                         limit=self.concurrency, ttl_dns_cache=60)
        self._http = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
            timeout=aiohttp.ClientTimeout(total=self.timeout, connect=self.connect_timeout),
            headers={"User-Agent": USER_AGENT})

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
        assert self._http is not None, "start() the sender first"
        started = time.monotonic()

        def elapsed() -> int:
            return int((time.monotonic() - started) * 1000)

        problem = url_problem(url, allow_http=self.allow_http, allow_private=self.allow_private)
        if problem:
            return Outcome(False, None, 0, error=f"refused: the URL {problem}")
        try:
            async with self._http.post(url, data=body, allow_redirects=False,
                                       headers={"Content-Type": "application/json", **headers}) as response:
                excerpt, truncated = await self._read_capped(response)
                if truncated:
                    response.close()  # the unread rest is not waited for: the connection is dropped
                ok = 200 <= response.status < 300
                error = "" if ok else f"HTTP {response.status}" + (
                    " (redirects are not followed)" if 300 <= response.status < 400 else "")
                return Outcome(ok, response.status, elapsed(), _text(excerpt), error)
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, RefusedDestination):
                return Outcome(False, None, elapsed(), error=f"refused: {exc.os_error}{_PRIVATE_HINT}")
            return Outcome(False, None, elapsed(), error=f"cannot connect: {exc.os_error or exc}")
        except RefusedDestination as exc:
            return Outcome(False, None, elapsed(), error=f"refused: {exc}{_PRIVATE_HINT}")
        except aiohttp.ConnectionTimeoutError:
            return Outcome(False, None, elapsed(), error=f"connection timed out after {self.connect_timeout:g} s")
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            return Outcome(False, None, elapsed(), error=f"timed out after {self.timeout:g} s")
        except aiohttp.ClientError as exc:
            return Outcome(False, None, elapsed(), error=f"{type(exc).__name__}: {exc}"[:1000])
        except (OSError, ValueError) as exc:  # e.g. an invalid URL found only when connecting
            return Outcome(False, None, elapsed(), error=f"{type(exc).__name__}: {exc}"[:1000])

    @staticmethod
    async def _read_capped(response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        """At most MAX_RESPONSE_BYTES of the answer, and whether there was more."""
        chunks: list[bytes] = []
        size = 0
        while size < MAX_RESPONSE_BYTES:
            chunk = await response.content.read(MAX_RESPONSE_BYTES - size)
            if not chunk:
                return b"".join(chunks), False
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks), not response.content.at_eof()
