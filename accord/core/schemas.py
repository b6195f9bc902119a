"""Field types shared by several domains' API shapes."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

Slug = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?$", max_length=100),
    Field(description="Lower-case letters, digits and dashes", examples=["social-api"]),
]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ShortText = Annotated[str, StringConstraints(max_length=2000)]
LongText = Annotated[str, StringConstraints(max_length=100_000)]


def _http_url(value: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    return value.rstrip("/")


HttpUrl = Annotated[str, StringConstraints(max_length=2000), AfterValidator(_http_url)]

CustomFieldValues = Annotated[
    dict[str, Any],
    Field(description="Values of the program's custom fields, validated against their definitions"),
]


class ReadModel(BaseModel):
    """Base of every response shape: built from ORM rows."""

    model_config = ConfigDict(from_attributes=True)


def _reject_nul(value: Any, where: str = "") -> None:
    if isinstance(value, str):
        if "\x00" in value:
            at = f" (at {where.lstrip('.')})" if where else ""
            raise ValueError(f"must not contain the NUL character{at}")
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_nul(key, f"{where}.{key}")
            _reject_nul(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _reject_nul(item, f"{where}.{index}")


class WriteModel(BaseModel):
    """Base of every request shape: unknown fields are refused, not ignored.

    Text with a NUL character is refused everywhere: PostgreSQL cannot store it.
    """

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        _reject_nul(value)
        return value
