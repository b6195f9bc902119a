"""RFC 9457 problem details: one error shape for every API answer that is not a success.

Every problem has a stable `type` (`/problems/<slug>`), a `title`, the HTTP
`status`, a human `detail` and, when input was at fault, `errors`: a list of
`{"field": "dotted.path", "reason": "…"}` naming each offending field.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("accord.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"

# slug -> (status, title, when it happens). The catalog is served at /problems.
PROBLEM_TYPES: dict[str, tuple[int, str, str]] = {
    "bad-request": (400, "Bad request", "The request could not be understood."),
    "unauthenticated": (401, "Authentication required", "No valid token or credential was presented."),
    "forbidden": (403, "Forbidden", "The caller is authenticated but its role does not allow this action."),
    "not-found": (404, "Not found", "The resource does not exist or is not visible to the caller."),
    "method-not-allowed": (405, "Method not allowed", "The route exists but not for this HTTP method."),
    "conflict": (409, "Conflict", "The change conflicts with existing data (a duplicate slug, a state that forbids it)."),
    "invalid-state": (409, "Invalid state", "The resource's current state does not allow this transition."),
    "validation-error": (422, "Validation error", "One or more fields are invalid; see `errors`."),
    "too-many-attempts": (429, "Too many attempts", "Too many failed sign-ins for the account or from the address; "
                          "wait `Retry-After` seconds (a password reset ends the account's wait)."),
    "internal-error": (500, "Internal error", "An unexpected error; it has been logged."),
}



class FieldError(BaseModel):
    field: str
    reason: str


class Problem(BaseModel):
    """The body of every error answer (RFC 9457)."""

    type: str
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldError] = []


@dataclass
class ProblemError(Exception):
    """Raise anywhere to answer with a problem document."""

    slug: str
    detail: str | None = None
    errors: list[dict[str, str]] = field(default_factory=list)
    status: int | None = None
    headers: dict[str, str] | None = None  # sent with the answer (Retry-After, …)

    def to_problem(self) -> dict[str, Any]:
        status, title, _ = PROBLEM_TYPES[self.slug]
        body: dict[str, Any] = {
            "type": f"/problems/{self.slug}",
            "title": title,
            "status": self.status or status,
            "detail": self.detail or title,
        }
        if self.errors:
            body["errors"] = self.errors
        return body


def not_found(what: str) -> ProblemError:
    return ProblemError("not-found", f"{what} not found")


def invalid(field_name: str, reason: str) -> ProblemError:
    return ProblemError("validation-error", f"{field_name}: {reason}", [{"field": field_name, "reason": reason}])


def reject_nulls(changes: dict[str, Any], *, nullable: frozenset[str] | set[str] = frozenset()) -> None:
    """A PATCH may leave a field out, but set it to null only where null means something."""
    for key, value in changes.items():
        if value is None and key not in nullable:
            raise invalid(key, "may not be null")


def conflict(field_name: str, reason: str) -> ProblemError:
    return ProblemError("conflict", f"{field_name}: {reason}", [{"field": field_name, "reason": reason}])


def problem_response(error: ProblemError, headers: dict[str, str] | None = None) -> JSONResponse:
    body = error.to_problem()
    return JSONResponse(body, status_code=body["status"], media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header", "cookie"}:
        source, parts = parts[0], parts[1:]
        if source != "body" and parts:
            return f"{source}.{'.'.join(parts)}"
    return ".".join(parts) or "body"


_STATUS_SLUGS = {400: "bad-request", 401: "unauthenticated", 403: "forbidden", 404: "not-found",
                 405: "method-not-allowed", 409: "conflict", 422: "validation-error"}


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(_: Request, exc: ProblemError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.slug == "unauthenticated" else {}
        return problem_response(exc, {**headers, **(exc.headers or {})} or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            loc = err.get("loc", ())
            reason = str(err.get("msg", "invalid"))
            if err.get("type") == "json_invalid":
                # Its loc is ("body", <character offset>): the field is the body itself.
                position = f" (at character {loc[1]})" if len(loc) > 1 else ""
                reason, loc = f"request body is not valid JSON{position}", ("body",)
            errors.append({"field": _field_path(loc), "reason": reason})
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:5])
        return problem_response(ProblemError("validation-error", detail, errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = _STATUS_SLUGS.get(exc.status_code, "bad-request")
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem_response(ProblemError(slug, detail, status=exc.status_code), getattr(exc, "headers", None))

    @app.exception_handler(IntegrityError)
    async def _integrity(_: Request, exc: IntegrityError) -> JSONResponse:
        # Services check uniqueness first and name the field; this is the
        # backstop for a race between two writers.
        log.info("integrity error: %s", exc.orig)
        return problem_response(ProblemError("conflict", "the change conflicts with existing data"))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem_response(ProblemError("internal-error"))


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting the problems a route can answer."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        titles = [f"`{slug}`: {title}" for slug, (st, title, _) in PROBLEM_TYPES.items() if st == status]
        out[status] = {
            "model": Problem,
            "description": "; ".join(titles) or "Problem",
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return out


# What most routes document besides their router's 401 and 403: a route that reads one
# thing may answer 404; one that changes data may also answer 409 and 422.
READ_PROBLEMS = problem_responses(404)
WRITE_PROBLEMS = problem_responses(404, 409, 422)
