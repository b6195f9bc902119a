"""Building list queries from the filters a caller gave."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute


def where_equal(stmt: Select, filters: Mapping[InstrumentedAttribute[Any], Any]) -> Select:
    """`stmt` keeping the rows whose column equals the value given for it.

    A filter left out (None, or an empty query parameter) does not narrow the list; False does.
    """
    for column, value in filters.items():
        if value is not None and value != "":
            stmt = stmt.where(column == value)
    return stmt
