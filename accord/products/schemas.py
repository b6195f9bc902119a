"""API shapes for products (access groups): their APIs and selected methods."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from accord.catalog.models import Visibility
from accord.core.schemas import LongText, Name, ReadModel, Slug, WriteModel



def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it here rather than fail in the database.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


NoNul = AfterValidator(_no_nul)
Title = Annotated[Name, NoNul]
Text = Annotated[LongText, NoNul]
Notes = Annotated[Text, Field(description="Staff-only notes; never shown to partners")]
# UUIDs are valid slugs too, so an API reference is plain text resolved by the service: id first, then slug.
ApiRef = Annotated[str, StringConstraints(min_length=1, max_length=100), NoNul,
                   Field(description="The API's id or slug", examples=["social-api"])]
MetricName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")]


class MetricSelector(WriteModel):
    """A metric named either by its id, or by its API's slug and its system name."""

    metric_id: uuid.UUID | None = Field(None, description="The metric's id (or give `api` and `metric`)")
    api: Slug | None = Field(None, description="Slug of the metric's API")
    metric: MetricName | None = Field(None, description="System name of the metric in that API", examples=["hits"])


class ProductCreate(WriteModel):
    name: Title
    slug: Slug
    description: Text = ""
    notes: Notes = ""
    visibility: Visibility = Visibility.partner
    apis: Annotated[list[ApiRef], Field(max_length=200, description="APIs in the product, by id or slug")] = []
    methods: Annotated[list[MetricSelector], Field(
        max_length=1000, description="Selected methods; an API with selected methods exposes only those")] = []


class ProductUpdate(WriteModel):
    name: Title | None = None
    slug: Slug | None = None
    description: Text | None = None
    notes: Notes | None = None
    visibility: Visibility | None = None
    apis: Annotated[list[ApiRef], Field(max_length=200, description="Replaces the product's APIs")] | None = None
    methods: Annotated[list[MetricSelector], Field(
        max_length=1000, description="Replaces the selected methods")] | None = None


class ProductApisSet(WriteModel):
    apis: Annotated[list[ApiRef], Field(max_length=200, description="The product's APIs, by id or slug")]


class ProductApiAdd(WriteModel):
    api: ApiRef


class ProductMethodsSet(WriteModel):
    methods: Annotated[list[MetricSelector], Field(
        max_length=1000, description="The selected methods; an empty list puts every API in whole")]


class ProductApiRead(ReadModel):
    id: uuid.UUID
    slug: str
    name: str
    whole: bool = Field(description="True when no methods of this API are selected: every method is in")


class ProductMethodRead(ReadModel):
    metric_id: uuid.UUID
    api_id: uuid.UUID
    api: str = Field(description="Slug of the method's API")
    metric: str = Field(description="System name of the method")
    friendly_name: str


class ProductRead(ReadModel):
    id: uuid.UUID
    name: str
    slug: str
    description: str
    notes: str
    visibility: Visibility
    apis: list[ProductApiRead]
    methods: list[ProductMethodRead]
    created_at: datetime
    updated_at: datetime
