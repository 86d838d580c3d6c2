"""`farm_frames_rendered_total` comes from `frame_tallies`: one more per frame recorded, never for a frame recorded
twice, and never less when jobs are deleted — on Postgres and on the embedded SQLite alike (each says its upsert in
its own words)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from farm.db import Database, init_db
from farm.jobs import states
from farm.models import FrameTally, Job
from tests.rows import add_job, claimed_rows


@pytest.fixture(params=["postgresql", "sqlite"])
def any_database(request, database: Database, tmp_path: Path) -> Database:
    if request.param == "postgresql":
        return database
    db = Database(f"sqlite:///{tmp_path / 'farm.sqlite'}")
    init_db(db.engine)
    return db


def tallied(db: Database, worker: str) -> int | None:
    with db.session() as session:
        return session.scalar(select(FrameTally.frames).where(FrameTally.worker == worker))


def test_frames_are_tallied_per_renderer_and_outlive_their_jobs(any_database):
    db, worker, other = any_database, f"tally-{uuid.uuid4().hex[:6]}@test", f"other-{uuid.uuid4().hex[:6]}@test"
    with db.session() as session:
        job_id = add_job(session, 3, 3)
        claimed_rows(session, job_id, 1)  # its one chunk's frame rows, as a claim makes them
    stored = dict(render_time_ms=10.0, device="CPU", image_key="k", sha256="0" * 64, size=1)
    with db.session() as session:
        assert states.frame_done(session, job_id, 1, worker=worker, **stored)
        assert states.frame_done(session, job_id, 2, worker=worker, **stored)
        assert not states.frame_done(session, job_id, 2, worker=worker, **stored)  # already done: not counted
        assert states.frame_done(session, job_id, 3, worker=other, **stored)
    assert (tallied(db, worker), tallied(db, other)) == (2, 1)

    with db.session() as session:
        session.execute(delete(Job).where(Job.id == job_id))
    assert (tallied(db, worker), tallied(db, other)) == (2, 1)  # a counter never goes down
