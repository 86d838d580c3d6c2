"""How many Postgres connections a process keeps between transactions (`keep`, FARM_WORKER_DB_CONNECTIONS for the
workers): Postgres serves a limited number, and a farm of many workers, each of several processes, must fit. Counted
by Postgres itself (pg_stat_activity), under an application name of the test's own."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from sqlalchemy import text

from farm.db import Database
from tests.conftest import PG_HOST


def open_connections(name: str) -> int:
    with psycopg.connect(f"{PG_HOST}/postgres") as admin:
        row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)).fetchone()
    return int(row[0]) if row else 0


def overlapping_sessions(db: Database, threads: int) -> None:
    """`threads` sessions open at once (each waits for the others inside its transaction), as a worker's heartbeat,
    janitor and history threads sometimes are."""
    inside = threading.Barrier(threads, timeout=30)

    def work() -> None:
        with db.session() as session:
            session.execute(text("SELECT 1"))
            inside.wait()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(60)


@pytest.mark.parametrize("keep", [0, 1, 2])
def test_a_process_keeps_only_the_connections_it_is_told_to(pg_url, keep):
    name = f"farm-keep-{uuid.uuid4().hex[:8]}"
    db = Database(f"{pg_url}?application_name={name}", keep=keep)
    try:
        overlapping_sessions(db, 3)
        assert open_connections(name) == keep
        with db.session() as session:  # a later transaction reuses a kept connection, or opens its own
            assert session.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :n"), {"n": name}
            ).scalar() == max(keep, 1)
    finally:
        db.engine.dispose()
    assert open_connections(name) == 0
