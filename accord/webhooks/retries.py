"""When a failed delivery is tried again: exponential backoff with full jitter.

The n-th retry waits a random time between 1 s and the n-th step of the schedule
(5 s, 30 s, 2 min, 10 min, 1 h, 3 h, then 6 h each time), so that many deliveries
failing together (an endpoint that was down) do not come back all at once. Retries
stop `webhooks_retry_hours` (3 days by default) after the delivery was created.
"""
from __future__ import annotations

import random
from datetime import timedelta

SCHEDULE_SECONDS = (5, 30, 120, 600, 3600, 3 * 3600, 6 * 3600)
_MINIMUM_SECONDS = 1.0


def retry_delay(attempts_made: int, rng: random.Random | None = None) -> timedelta:
    """How long to wait after the `attempts_made`-th failed attempt (1 for the first)."""
    step = SCHEDULE_SECONDS[min(max(attempts_made, 1), len(SCHEDULE_SECONDS)) - 1]
    return timedelta(seconds=max(_MINIMUM_SECONDS, (rng or random).uniform(0, step)))
