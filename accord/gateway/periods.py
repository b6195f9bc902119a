"""Calendar-aligned limit windows in UTC, from epoch seconds.

A window is the half-open interval [start, end) of whole epoch seconds that
contains a given instant: the current second, minute, hour, day, week
(Monday 00:00 UTC), month (the 1st, 00:00 UTC) or year (1 January). The
eternity window never resets; its end is `ETERNITY_END`, the first instant
`datetime` cannot represent, so "seconds until reset" stays a finite integer.

Epoch time has no leap seconds, so every day is exactly 86 400 s and the
fixed-length windows are plain integer arithmetic; months and years go through
`datetime` once per window and are then served from a one-entry cache.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

PERIODS = ("second", "minute", "hour", "day", "week", "month", "year", "eternity")

ETERNITY_END: Final = 253_402_300_800
"""10000-01-01T00:00:00Z in epoch seconds: "never" for the eternity window."""

_FIXED_LENGTH: Final = {"second": 1, "minute": 60, "hour": 3_600, "day": 86_400}
_DAY: Final = 86_400
_WEEK: Final = 7 * _DAY
_EPOCH_WEEKDAY: Final = 3  # 1970-01-01 was a Thursday; Monday is 0

# The last window handed out per period. An instant inside it (the usual case:
# many requests in the same window) costs two comparisons.
_last: Final[dict[str, tuple[int, int]]] = {}


def window(period: str, now: float) -> tuple[int, int]:
    """The [start, end) epoch seconds of the `period` window containing `now`.

    Raises KeyError for an unknown period name.
    """
    last = _last.get(period)
    if last is not None and last[0] <= now < last[1]:
        return last
    bounds = _compute(period, int(now // 1))
    _last[period] = bounds
    return bounds


def _compute(period: str, second: int) -> tuple[int, int]:
    length = _FIXED_LENGTH.get(period)
    if length is not None:
        start = second - second % length
        return start, start + length
    if period == "week":
        day = second // _DAY
        start = (day - (day + _EPOCH_WEEKDAY) % 7) * _DAY
        return start, start + _WEEK
    if period == "eternity":
        return 0, ETERNITY_END
    # From the whole second (not the float), so an instant a hair before
    # midnight can never be rounded into the next month by datetime.
    moment = datetime.fromtimestamp(second, UTC)
    end_dt: datetime | None
    if period == "month":
        start_dt = datetime(moment.year, moment.month, 1, tzinfo=UTC)
        if moment.month < 12:
            end_dt = datetime(moment.year, moment.month + 1, 1, tzinfo=UTC)
        else:
            end_dt = _new_year(moment.year + 1)
    elif period == "year":
        start_dt = datetime(moment.year, 1, 1, tzinfo=UTC)
        end_dt = _new_year(moment.year + 1)
    else:
        raise KeyError(period)
    end = ETERNITY_END if end_dt is None else int(end_dt.timestamp())
    return int(start_dt.timestamp()), end


def _new_year(year: int) -> datetime | None:
    """1 January of `year`, or None past datetime's range (then the window ends at ETERNITY_END)."""
    return datetime(year, 1, 1, tzinfo=UTC) if year <= 9999 else None


def window_seconds(period: str, now: float) -> int | None:
    """Length of the window containing `now` (a month is 28–31 days); None for eternity.

    This is the `w` of a RateLimit-Policy item: eternity has no window, so `w` is left out.
    """
    if period == "eternity":
        return None
    start, end = window(period, now)
    return end - start
