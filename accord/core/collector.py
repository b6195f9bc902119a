"""Holding off Python's cyclic garbage collector while a large structure is built (and dropped).

Used by the integration audit (rows of 10k partners) and the gateway's snapshot builder (on its own
thread, where a full collection of a growing heap would hold the GIL, and so the serving loop, for
100+ ms)."""
from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_pauses = 0
_collector_was_enabled = False
_lock = threading.Lock()  # the snapshot builder pauses from its own thread


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection inside the block.

    The whole audit is hundreds of thousands of small objects (ids, rows, dicts) and no
    reference cycle, so reference counting frees all of it; left on, the collector walks the
    whole growing heap again and again, which costs more than every query together (10k
    partners: about half of the CPU time). Objects still alive when the block ends are walked
    once by the next collection, so callers drop their rows inside it (see `service.export`).
    Overlapping reports share one pause; the last one out turns the collector back on, if it was on."""
    global _pauses, _collector_was_enabled
    with _lock:
        if _pauses == 0:
            _collector_was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _collector_was_enabled:
                gc.enable()
