"""Engines and sessions for the farm's database, shared by the web app, the workers and the CLI.

SQLite (the embedded default) is shared by several processes, so it runs in WAL mode with a generous busy
timeout; Postgres connections are checked before use so a database restart costs a retry, not a crash.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from farm import schema


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event below opens transactions
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


@event.listens_for(Engine, "begin")
def _sqlite_begin_immediate(conn: Any) -> None:
    """Take SQLite's write lock up front: a read that later writes would otherwise fail at once, not wait."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def engine_options(url: str, *, pre_ping: bool = True, keep: int = 5) -> dict[str, Any]:
    """Options for `create_engine` (and Flask-SQLAlchemy) that suit this database. `pre_ping`: test each pooled
    connection before use (a round trip), for callers that would fail on a connection the server dropped. `keep`:
    connections kept open between transactions (more are opened when threads overlap, and closed after); 0 opens
    one per transaction, so a process that waits holds none: Postgres serves a limited number of connections, and
    each farm worker runs several processes (FARM_WORKER_DB_CONNECTIONS)."""
    if make_url(url).get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    return {"pool_pre_ping": pre_ping, "pool_recycle": 1800, **pool_options(keep)}


def pool_options(keep: int) -> dict[str, Any]:
    """The connection pool's part of `engine_options` (Celery's database result backend takes these too)."""
    if keep == 0:
        return {"poolclass": NullPool}
    return {"pool_size": keep, "max_overflow": 10}


def make_engine(url: str, *, pre_ping: bool = True, keep: int = 5) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return create_engine(url, **engine_options(url, pre_ping=pre_ping, keep=keep))


def init_db(engine: Engine) -> None:
    """Bring the schema to this code's revision with Alembic (`farm.schema`), under the migration lock, since web
    and workers may start at once."""
    schema.upgrade(engine)


class Database:
    """One engine and its session factory, created once per process."""

    def __init__(self, url: str, *, pre_ping: bool = True, keep: int = 5) -> None:
        self.engine = make_engine(url, pre_ping=pre_ping, keep=keep)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        with self.sessions() as session, session.begin():
            yield session
