"""Mapping-rule patterns: `/path/{var}/more$?key=value&other={var}`.

Parsed here once for validation; the gateway compiles the same syntax.
"""
from __future__ import annotations

import re

_SEGMENT = re.compile(r"^(?:[A-Za-z0-9._~:@!$&'()*+,;=%-]|\{[A-Za-z_][A-Za-z0-9_]*\})*$")
_QUERY_PAIR = re.compile(r"^[A-Za-z0-9._~%-]+=(?:[A-Za-z0-9._~%-]*|\{[A-Za-z_][A-Za-z0-9_]*\})$")


def split_pattern(pattern: str) -> tuple[str, bool, list[tuple[str, str]]]:
    """(path template, exact end, query pairs)."""
    path, _, query = pattern.partition("?")
    exact = path.endswith("$")
    path = path.removesuffix("$")
    pairs = [tuple(pair.split("=", 1)) for pair in query.split("&") if pair] if query else []
    return path, exact, pairs  # type: ignore[return-value]


def validate_pattern(pattern: str) -> None:
    """Raise ValueError with the reason a pattern is not valid."""
    path, _, query = pattern.partition("?")
    if not path.startswith("/"):
        raise ValueError("must start with /")
    body = path.removesuffix("$")
    if "$" in body:
        raise ValueError("$ may only end the path")
    for segment in body.split("/")[1:]:
        if not _SEGMENT.match(segment):
            raise ValueError(f"invalid path segment {segment!r}: use letters, digits and {{name}} variables")
    if query:
        for pair in query.split("&"):
            if not _QUERY_PAIR.match(pair):
                raise ValueError(f"invalid query match {pair!r}: use key=value or key={{name}}")
