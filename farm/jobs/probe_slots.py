"""How many Blender probes one web process runs at once (FARM_MAX_PROBES). Each probe is a Blender process on the
web host reading a user's file, often rendering a frame of it; unbounded, a burst of submissions would start as many
Blenders as the server has threads and exhaust its memory. Past the limit a submission is answered at once with 503
`busy` and a Retry-After, rather than left waiting behind the others until its client gives up.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from farm.errors import FarmError

RETRY_AFTER_SECONDS = 5  # a probe takes from half a second (reading the scene) to FARM_PROBE_FRAME_SECONDS


class Busy(FarmError):
    status = 503

    def __init__(self, limit: int) -> None:
        super().__init__(
            None,
            "busy",
            f"this server is already reading {limit} scenes; send the file again in {RETRY_AFTER_SECONDS} seconds",
        )

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(RETRY_AFTER_SECONDS)}


class ProbeSlots:
    """A counter rather than a semaphore, so the limit is read from the settings at each probe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy = 0

    @contextmanager
    def hold(self, limit: int) -> Iterator[None]:
        """One slot for the duration of the block; Busy when all `limit` are taken."""
        with self._lock:
            if self._busy >= limit:
                raise Busy(limit)
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1


PROBE_SLOTS = ProbeSlots()  # one per web process: gunicorn's workers each import the app after the fork
