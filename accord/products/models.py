"""Products (access groups): bundles of whole APIs or of selected methods."""
from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from accord.catalog.models import Visibility
from accord.core.db import Base, Entity


class Product(Entity):
    __tablename__ = "products"

    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # Staff-only remarks; never part of a partner-facing shape.
    notes: Mapped[str] = mapped_column(Text, default="")
    visibility: Mapped[Visibility] = mapped_column(default=Visibility.partner)


class ProductApi(Base):
    """An API in a product. With no ProductMethod rows for it, the whole API is in."""

    __tablename__ = "product_apis"

    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), primary_key=True)
    api_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("apis.id", ondelete="CASCADE"), primary_key=True)


class ProductMethod(Base):
    """A selected method (metric) of an API in a product: the product gets only these."""

    __tablename__ = "product_methods"

    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), primary_key=True)
    metric_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("metrics.id", ondelete="CASCADE"), primary_key=True)
