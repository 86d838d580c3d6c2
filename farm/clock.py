"""One clock for the whole farm: the database server's. Heartbeats, claims, dispatches and every staleness judgement
use it, in SQL (`db_now()`: Postgres' `now()`, SQLite's CURRENT_TIMESTAMP clock) or read once (`database_now`), so a
render node whose clock runs 90 s behind is judged like any other: never one machine's clock against another's.
Each worker measures how far its own clock is off (`offset`), for the monitor.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy import DateTime, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

OFFSET_WARNING_SECONDS = 5.0  # the monitor warns about a worker whose clock is off by more


class db_now(FunctionElement[datetime]):
    """The database server's clock, in SQL. Heartbeats, claims and every staleness judgement use it, so a render
    node whose clock runs 90 s behind is judged by the same clock as everyone else."""

    type = DateTime(timezone=True)
    inherit_cache = True


@compiles(db_now)
def _db_now(element: db_now, compiler: SQLCompiler, **kw: object) -> str:
    return "now()"  # Postgres: the transaction's start


@compiles(db_now, "sqlite")
def _db_now_sqlite(element: db_now, compiler: SQLCompiler, **kw: object) -> str:
    # CURRENT_TIMESTAMP's clock, written as SQLAlchemy writes datetimes (microseconds), so stored values compare.
    return "strftime('%Y-%m-%d %H:%M:%f000', 'now')"


def aware(when: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; every stored time is UTC."""
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def database_now(session: Session) -> datetime:
    """The database server's clock now, for judging staleness in Python against times it wrote."""
    now = session.scalar(select(db_now()))
    assert now is not None
    return aware(now)


def offset(session: Session) -> float:
    """Seconds the database's clock is ahead of this machine's (negative: behind), measured against the middle of
    the round trip; within a second on SQLite, whose clock has milliseconds."""
    before = time.time()
    now = database_now(session)
    after = time.time()
    return now.timestamp() - (before + after) / 2
