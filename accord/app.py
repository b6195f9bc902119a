"""The control plane: one FastAPI application serving the admin and partner APIs."""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from accord.core.config import Settings
from accord.core.db import create_engine, session_factory
from accord.core.errors import (
    PROBLEM_TYPES,
    Problem,
    ProblemError,
    install_problem_handlers,
    problem_response,
    problem_responses,
)
from accord.core.migrate import schema_is_current

log = logging.getLogger("accord")


class SchemaNotCurrent(RuntimeError):
    pass


def _routers() -> list[tuple[Any, str, list[str]]]:
    # Imported here so that importing accord.app stays cheap for the CLI.
    from accord.agreements import routes as agreements
    from accord.announcements import routes as announcements
    from accord.apps import routes as apps
    from accord.audit import routes as audit
    from accord.auth import routes as auth
    from accord.catalog import routes as catalog
    from accord.customfields import routes as customfields
    from accord.events import routes as events
    from accord.funnel import routes as funnel
    from accord.integrations import routes as integrations
    from accord.notifications import routes as notifications
    from accord.onboarding import routes as onboarding
    from accord.partners import routes as partners
    from accord.plans import routes as plans
    from accord.products import routes as products
    from accord.subscriptions import routes as subscriptions
    from accord.teams import routes as teams
    from accord.usage import routes as usage
    from accord.users import routes as users
    from accord.webhooks import routes as webhooks

    modules = [auth, catalog, products, plans, partners, customfields, users, teams, subscriptions, apps, audit, usage, events,
               announcements, notifications, webhooks, agreements, funnel, integrations, onboarding]
    out = []
    for module in modules:
        if hasattr(module, "admin_router"):
            out.append((module.admin_router, "/admin/api", ["admin"]))
        if hasattr(module, "partner_router"):
            out.append((module.partner_router, "/api", ["partner"]))
    return out


def _all_problem_types() -> dict[str, tuple[int, str, str]]:
    """The control plane's problem types and the gateway's denial reasons."""
    from accord.gateway.problems import REASONS

    gateway = {slug: (status, title, f"Gateway: {title[0].lower()}{title[1:]}.")
               for slug, (status, title) in REASONS.items()}
    return {**PROBLEM_TYPES, **gateway}


async def ensure_schema(engine: AsyncEngine) -> None:
    if not await schema_is_current(engine):
        raise SchemaNotCurrent(
            "the database schema is missing or out of date; run `accord migrate` "
            "(or `accord demo`, which migrates its own database)"
        )


def create_app(settings: Settings | None = None, engine: AsyncEngine | None = None, *,
               check_schema: bool = True) -> FastAPI:
    settings = settings or Settings()
    settings.refuse_unsafe()
    own_engine = engine is None
    engine = engine or create_engine(settings.database_url, echo=settings.log_sql)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if check_schema:
            await ensure_schema(engine)
        yield
        if own_engine:
            await engine.dispose()

    app = FastAPI(
        title="Accord",
        version="0.1.0",
        summary="Run an API partner program: partners, agreements, apps and credentials, products and traffic.",
        description=(
            "The **admin API** (`/admin/api`) is for the program team and takes an admin token "
            "(`accord token create`). The **partner API** (`/api`) is for partner members and takes "
            "a session token from `POST /api/auth/login`.\n\nEvery error is an RFC 9457 "
            "`application/problem+json` document with a stable `type`; see `GET /problems`."
        ),
        lifespan=lifespan,
        responses=problem_responses(422),
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = session_factory(engine)
    install_problem_handlers(app)
    app.add_middleware(RejectNulMiddleware)

    for router, prefix, tags in _routers():
        app.include_router(router, prefix=prefix, tags=tags)

    @app.get("/healthz", tags=["meta"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/problems", tags=["meta"], summary="The catalog of problem types")
    async def problems() -> list[dict[str, Any]]:
        return [{"type": f"/problems/{slug}", "status": status, "title": title, "description": desc}
                for slug, (status, title, desc) in _all_problem_types().items()]

    @app.get("/problems/{slug}", tags=["meta"], summary="One problem type",
             responses=problem_responses(404))
    async def problem(slug: str) -> dict[str, Any]:
        if slug not in _all_problem_types():
            raise ProblemError("not-found", f"no problem type {slug!r}")
        status, title, desc = _all_problem_types()[slug]
        return {"type": f"/problems/{slug}", "status": status, "title": title, "description": desc}

    _document_problem_schema(app)
    return app


class RejectNulMiddleware:
    """Answer 422 to a NUL character in the path or query: no database can store or match it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            fields = self._fields_with_nul(scope)
            if fields:
                reason = "must not contain the NUL character"
                response = problem_response(ProblemError(
                    "validation-error", f"{', '.join(fields)}: {reason}", [{"field": f, "reason": reason} for f in fields]))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _fields_with_nul(scope: dict[str, Any]) -> list[str]:
        fields = ["path"] if "\x00" in scope["path"] else []
        query = scope.get("query_string", b"")
        if b"%00" in query:
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            fields += [f"query.{key.replace(chr(0), '')}" for key, value in pairs if "\x00" in key + value]
        return fields


def _document_problem_schema(app: FastAPI) -> None:
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("Problem", Problem.model_json_schema(ref_template="#/components/schemas/{model}"))
        for name, sub in Problem.model_json_schema(ref_template="#/components/schemas/{model}").get("$defs", {}).items():
            components.setdefault(name, sub)
        components["Problem"].pop("$defs", None)
        # Replace FastAPI's default HTTPValidationError answers with our problem shape.
        for path in schema.get("paths", {}).values():
            for op in path.values():
                resp = op.get("responses", {}).get("422")
                if resp:
                    resp["content"] = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
                    resp["description"] = "`validation-error`: one or more fields are invalid; see `errors`."
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


__all__ = ["create_app", "JSONResponse"]
