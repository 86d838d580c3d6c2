"""A task follows its database change: sent when the transaction commits, in order, and never after a rollback."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from farm.db import Database, init_db
from farm.messaging.dispatch import after_commit
from farm.models import Worker


@pytest.fixture()
def database(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'farm.db'}")
    init_db(database.engine)
    return database


def add_worker(session, name: str) -> None:
    session.add(Worker(hostname=name, status="ONLINE", devices=[], queues=["farm"], pid=1))


def test_sends_run_after_the_commit_in_order(database):
    sent: list[tuple[str, bool]] = []

    def send(name: str):
        def run() -> None:  # what the send sees: is the row it follows already committed?
            with database.session() as other:
                sent.append((name, other.get(Worker, name) is not None))

        return run

    with database.session() as session:
        add_worker(session, "a")
        after_commit(session, send("a"))
        add_worker(session, "b")
        after_commit(session, send("b"))
        session.flush()
        assert sent == []  # nothing leaves before the commit
    assert sent == [("a", True), ("b", True)]


def test_a_rolled_back_change_sends_nothing(database):
    sent: list[str] = []
    with pytest.raises(RuntimeError), database.session() as session:
        add_worker(session, "c")
        after_commit(session, lambda: sent.append("c"))
        raise RuntimeError("the change fails")
    with database.session() as session:  # a later transaction of another session does not inherit it
        add_worker(session, "d")
        after_commit(session, lambda: sent.append("d"))
    assert sent == ["d"]
    with database.session() as session:
        assert session.scalars(select(Worker.hostname)).all() == ["d"]
