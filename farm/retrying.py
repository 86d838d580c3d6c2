"""Ride out outages of the database or storage: retry transient failures with backoff instead of losing work.

Only errors that can heal by themselves are retried (a connection refused, a dropped connection, a 5xx); a bad
query or a missing key fails at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from farm.storage import StorageUnavailable

T = TypeVar("T")
log = logging.getLogger(__name__)
TRANSIENT: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    StorageUnavailable,
    ConnectionError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, TRANSIENT)


def with_retries(
    action: Callable[[], T],
    *,
    what: str,
    deadline_s: float = 900.0,
    first_delay_s: float = 0.5,
    max_delay_s: float = 15.0,
) -> T:
    """Run `action`, retrying transient failures with exponential backoff for up to `deadline_s` seconds."""
    started = time.monotonic()
    delay = first_delay_s
    while True:
        try:
            return action()
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() - started > deadline_s:
                raise
            log.warning(
                "%s failed (%s: %s); retrying in %.1f s",
                what,
                type(exc).__name__,
                str(exc).splitlines()[0][:200] if str(exc) else "",
                delay,
            )
            time.sleep(delay)
            delay = min(max_delay_s, delay * 2)
