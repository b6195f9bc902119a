"""The gateway's answers of its own: problem+json with a stable `type` per denial reason.

Precomputed bodies where possible; never leaks upstream details or secrets.
"""
from __future__ import annotations

import json

from accord.gateway import snapshot as s

# reason -> (status, title). The same slugs are listed by the control plane at GET /problems.
REASONS: dict[str, tuple[int, str]] = {
    s.MISSING_CREDENTIAL: (401, "No credential was presented"),
    s.UNKNOWN_CREDENTIAL: (401, "The credential is not known"),
    s.REVOKED_CREDENTIAL: (401, "The credential has been revoked"),
    s.EXPIRED_CREDENTIAL: (401, "The credential has expired"),
    s.APPLICATION_SUSPENDED: (403, "The application is suspended"),
    s.APPLICATION_PENDING: (403, "The application is waiting for approval"),
    s.PARTNER_SUSPENDED: (403, "The partner is suspended"),
    s.PARTNER_INACTIVE: (403, "The partner is not active"),
    s.WRONG_ENVIRONMENT: (403, "The credential belongs to another environment"),
    s.NOT_IN_PRODUCTS: (403, "The API is not in the application's products"),
    s.ABOVE_VISIBILITY: (403, "The API is above the partner's visibility tier"),
    s.METHOD_NOT_IN_PRODUCT: (403, "The method is not in the application's products"),
    s.HTTP_METHOD_DISABLED: (403, "The plan does not allow this HTTP method"),
    s.METHOD_DISABLED: (403, "The plan disables this method"),
    s.SUBSCRIPTION_INACTIVE: (403, "The subscription is not active"),
    s.LIMIT_REACHED: (429, "A usage limit has been reached"),
    s.NO_ROUTE: (404, "No API is served at this path"),
    s.DOT_SEGMENT: (400, "The path has a . or .. segment"),
    s.NO_MAPPING_RULE: (404, "No mapping rule matches this request"),
    s.NO_UPSTREAM: (502, "The API has no upstream for this environment"),
    s.UPSTREAM_UNREACHABLE: (502, "The upstream could not be reached"),
    s.UPSTREAM_TIMEOUT: (504, "The upstream did not answer in time"),
    s.LIMITER_UNAVAILABLE: (503, "Limits cannot be checked right now"),
    s.AGREEMENT_REQUIRED: (403, "A required agreement has not been accepted"),
    "snapshot-unavailable": (503, "The gateway has no configuration yet"),
}

PROBLEM_CONTENT_TYPE = b"application/problem+json"


def problem(reason: str, detail: str | None = None) -> tuple[int, bytes]:
    status, title = REASONS[reason]
    body = {"type": f"/problems/{reason}", "title": title, "status": status, "detail": detail or title}
    return status, json.dumps(body, separators=(",", ":")).encode()
