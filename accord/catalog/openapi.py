"""Reading and validating OpenAPI documents, and deriving methods from their operations."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import yaml
from openapi_spec_validator import validate as validate_spec

from accord.core.errors import invalid

HTTP_VERBS = ("get", "put", "post", "delete", "options", "head", "patch")


def parse_document(document: dict[str, Any] | str, field: str = "openapi") -> dict[str, Any]:
    """A validated OpenAPI document from a JSON object or JSON/YAML text; 422 naming `field` if not."""
    if isinstance(document, str):
        try:
            loaded = json.loads(document) if document.lstrip().startswith("{") else yaml.safe_load(document)
        except (ValueError, yaml.YAMLError) as exc:
            raise invalid(field, f"not valid JSON or YAML: {exc}".splitlines()[0]) from exc
    else:
        loaded = document
    if not isinstance(loaded, dict):
        raise invalid(field, "must be an OpenAPI document (a JSON/YAML object)")
    if not any(key in loaded for key in ("openapi", "swagger")):
        raise invalid(field, "missing the `openapi` version field")
    try:
        validate_spec(loaded)
    except Exception as exc:  # the validator raises several unrelated types
        message = str(getattr(exc, "message", exc)).splitlines()[0][:500]
        raise invalid(field, f"not a valid OpenAPI document: {message}") from exc
    # Round-trip through JSON so the stored document holds only JSON types (YAML dates, etc.).
    return json.loads(json.dumps(loaded, default=str))


@dataclass(frozen=True)
class Operation:
    verb: str
    path: str
    system_name: str
    friendly_name: str
    description: str

    @property
    def pattern(self) -> str:
        return self.path + "$"


def _system_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9_.-]+", "_", text.lower()).strip("_.-")
    return (name or "operation")[:100]


def operations(document: dict[str, Any]) -> list[Operation]:
    out: list[Operation] = []
    for path, item in (document.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        for verb in HTTP_VERBS:
            op = item.get(verb)
            if not isinstance(op, dict):
                continue
            op_id = op.get("operationId") or f"{verb}_{path}"
            friendly = op.get("summary") or op.get("operationId") or f"{verb.upper()} {path}"
            out.append(Operation(verb.upper(), path, _system_name(op_id), str(friendly)[:200],
                                 str(op.get("description") or "")))
    return out
