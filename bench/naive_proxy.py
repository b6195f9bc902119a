"""The benchmark's floor: the reverse proxy most people would write first, FastAPI + httpx.

    NAIVE_UPSTREAM=http://127.0.0.1:8081 .venv/bin/uvicorn bench.naive_proxy:app --port 8082

Every request, whatever its method and path, is forwarded to NAIVE_UPSTREAM with
its query, headers (minus hop-by-hop ones) and streamed body, through one pooled
httpx client; the answer's status, headers and body are streamed back. No auth,
no limits, no usage: it does less work than the gateway, so it is a floor.
"""
from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

UPSTREAM = os.environ.get("NAIVE_UPSTREAM", "http://127.0.0.1:8081")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host", "content-length"}

client: httpx.AsyncClient | None = None


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    global client
    client = httpx.AsyncClient(base_url=UPSTREAM, timeout=30.0,
                               limits=httpx.Limits(max_connections=None, max_keepalive_connections=256))
    yield
    await client.aclose()


app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)


@app.api_route("/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def forward(path: str, request: Request) -> StreamingResponse:
    assert client is not None
    headers = [(k, v) for k, v in request.headers.items() if k not in HOP_BY_HOP]
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    upstream_request = client.build_request(request.method, "/" + path, params=request.url.query or None,
                                            headers=headers, content=request.stream() if has_body else None)
    answer = await client.send(upstream_request, stream=True)
    out_headers = {k: v for k, v in answer.headers.items() if k not in HOP_BY_HOP}
    if "content-length" in answer.headers:
        out_headers["content-length"] = answer.headers["content-length"]
    return StreamingResponse(answer.aiter_raw(), status_code=answer.status_code, headers=out_headers,
                             background=BackgroundTask(answer.aclose))
