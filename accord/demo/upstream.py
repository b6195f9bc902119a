"""The demo's upstream: a tiny in-memory "Social API" and a partner-only "Insights API".

A raw ASGI app so the demo works offline with nothing else installed. It is
the provider's backend in the demo, not part of Accord itself.
"""
from __future__ import annotations

import json
from itertools import count
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]

USERS = [
    {"id": 1, "handle": "ada", "name": "Ada Lovelace"},
    {"id": 2, "handle": "grace", "name": "Grace Hopper"},
    {"id": 3, "handle": "alan", "name": "Alan Turing"},
]


class DemoUpstream:
    def __init__(self) -> None:
        self._ids = count(3)
        self.posts: dict[int, dict[str, Any]] = {
            1: {"id": 1, "user_id": 1, "text": "The Analytical Engine weaves algebraic patterns."},
            2: {"id": 2, "user_id": 2, "text": "It's easier to ask forgiveness than permission."},
        }

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, payload = self.route(scope["method"], scope["path"], parse_qs(scope.get("query_string", b"").decode()),
                                     body)
        data = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    def route(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        # The gateway may forward with or without the API's path prefix.
        if parts and parts[0] in {"social", "insights"}:
            parts = parts[1:]
        match method, parts:
            case "GET", ["users"]:
                return 200, {"items": USERS}
            case "GET", ["users", user_id] if user_id.isdigit():
                user = next((u for u in USERS if u["id"] == int(user_id)), None)
                return (200, user) if user else (404, {"error": "no such user"})
            case "GET", ["posts"]:
                return 200, {"items": list(self.posts.values())}
            case "GET", ["posts", post_id] if post_id.isdigit() and int(post_id) in self.posts:
                return 200, self.posts[int(post_id)]
            case "POST", ["posts"]:
                try:
                    text = str(json.loads(body or b"{}").get("text", ""))[:280]
                except (ValueError, AttributeError):
                    return 400, {"error": "body must be JSON like {\"text\": \"…\"}"}
                post = {"id": next(self._ids), "user_id": 1, "text": text}
                self.posts[post["id"]] = post
                return 201, post
            case "DELETE", ["posts", post_id] if post_id.isdigit() and int(post_id) in self.posts:
                del self.posts[int(post_id)]
                return 204, None
            case "GET", ["audience"]:
                return 200, {"followers": 1234, "reach_7d": 56789, "top_country": query.get("country", ["GB"])[0]}
            case "GET", ["trends"]:
                return 200, {"items": [{"tag": "#api", "score": 0.91}, {"tag": "#partners", "score": 0.77}]}
        return 404, {"error": f"no route for {method} {path}"}
