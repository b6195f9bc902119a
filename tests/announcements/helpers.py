"""Shared steps for the announcement tests: staff write and publish over the admin API."""
from __future__ import annotations

from typing import Any

import httpx


async def create(admin: httpx.AsyncClient, title: str, **fields: Any) -> dict[str, Any]:
    response = await admin.post("/admin/api/announcements", json={"title": title, "body": f"About {title}.",
                                                                 **fields})
    assert response.status_code == 201, response.text
    return response.json()


async def publish(admin: httpx.AsyncClient, announcement: dict[str, Any]) -> dict[str, Any]:
    response = await admin.post(f"/admin/api/announcements/{announcement['id']}/publish")
    assert response.status_code == 200, response.text
    return response.json()


async def published(admin: httpx.AsyncClient, title: str, **fields: Any) -> dict[str, Any]:
    return await publish(admin, await create(admin, title, **fields))


async def archive(admin: httpx.AsyncClient, announcement: dict[str, Any]) -> dict[str, Any]:
    response = await admin.post(f"/admin/api/announcements/{announcement['id']}/archive")
    assert response.status_code == 200, response.text
    return response.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
