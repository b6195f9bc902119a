"""An https:// upstream goes through aiohttp (TLS), the plain-http ones through the gateway's own client."""
from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import httpx
import pytest

from accord.gateway.app import GatewayApp
from accord.plans.models import Period
from tests.gateway.harness import EchoUpstream, committed, gateway_settings, serve, serve_gateway
from tests.gateway.test_limits_e2e import _limited_program


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


async def test_an_https_upstream_is_called_over_tls(fresh_database_url: str, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    upstream = EchoUpstream()
    async with serve(upstream, ssl_certfile=str(cert), ssl_keyfile=str(key)) as plain_url:
        https_url = plain_url.replace("http://", "https://")
        _, secret = await committed(fresh_database_url, lambda f, s: _limited_program(f, s, https_url + "/base", 100,
                                                                                      Period.minute))
        gateway = GatewayApp(gateway_settings(fresh_database_url))
        async with serve_gateway(gateway) as url, httpx.AsyncClient(base_url=url) as c:
            headers = {"Authorization": f"Bearer {secret}"}
            # Not trusted yet: the TLS handshake fails, and the caller learns only that the upstream is unreachable.
            refused = await c.get("/limited/x", headers=headers)
            assert refused.status_code == 502 and refused.json()["type"] == "/problems/upstream-unreachable"
            # A session like the gateway's own, trusting our certificate (aiohttp reads the system's CAs at import).
            await gateway.gateway.http.close()
            trusting = ssl.create_default_context(cafile=str(cert))
            gateway.gateway.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusting),
                                                         auto_decompress=False)
            answer = await c.get("/limited/items/a%2Fb?q=1", headers=headers)
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-upstream"] == "echo" and "ratelimit" in answer.headers
            seen = answer.json()
            assert seen["path"] == "/base/items/a/b" and seen["query"] == "q=1"
            assert "authorization" not in seen["headers"] and seen["headers"]["x-forwarded-proto"] == "http"
            assert gateway.gateway.upstream.connections_opened == 0  # the plain-http client was never used
