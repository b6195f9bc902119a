"""Offset pagination shared by every list route."""
from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")


class PageParams(BaseModel):
    limit: int
    offset: int


def _page_params(
    limit: Annotated[int, Query(ge=1, le=200, description="Items per page")] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000, description="Items to skip")] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


PageDep = Annotated[PageParams, Depends(_page_params)]


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int

    @classmethod
    def of(cls, items: list[T], total: int, page: PageParams) -> Page[T]:
        """The answer for `page`: its items and the total over every page."""
        return cls(items=items, total=total, limit=page.limit, offset=page.offset)


async def paginate(session: AsyncSession, query: Select, page: PageParams) -> tuple[list, int]:
    total = await session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    rows = (await session.scalars(query.limit(page.limit).offset(page.offset))).all()
    return list(rows), int(total or 0)


async def read_page(session: AsyncSession, query: Select, page: PageParams, read: Callable[[Any], T]) -> Page[T]:
    """One page of `query`, each row turned into its answer shape by `read` (e.g. `ApiRead.model_validate`).

    Lists whose shapes are built for all the rows at once use `paginate` and `Page.of` instead.
    """
    rows, total = await paginate(session, query, page)
    return Page.of([read(row) for row in rows], total, page)
