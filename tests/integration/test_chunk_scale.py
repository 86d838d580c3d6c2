"""A job of 10,000 chunks (issue #21's studio scale) on the real Postgres: its chunks answer a page at a time, its
live snapshot and updates carry a bounded set of them, and a cancel moves all 10,000 queued chunks with an event
each in two statements. The times are printed (`-s`) to compare with the figures in README's Capacity section; no
test asserts a time, which this shared machine could not keep."""

from __future__ import annotations

import json
import time

from sqlalchemy import func, select

from farm.jobs import states
from farm.models import Chunk, ChunkStatus, Event, Job
from tests.rows import make_job
from webapp.api.jobs import CHUNKS_PAGE
from webapp.live import SHOWN_CHUNKS, JobState

CHUNKS = 10_000


def test_a_job_of_10000_chunks_is_read_streamed_and_canceled_in_bounded_work(app, client, database):
    job_id = make_job(database, CHUNKS, 1)
    started = time.perf_counter()
    page = client.get(f"/api/jobs/{job_id}/chunks").get_json()
    read = time.perf_counter() - started
    assert (len(page["chunks"]), page["total"]) == (CHUNKS_PAGE, CHUNKS)

    with database.session() as session:
        far = session.scalar(select(Chunk).where(Chunk.job_id == job_id, Chunk.index == CHUNKS - 1))
        assert states.claim_chunk(session, far.id, "w@scale", None) is not None
    with app.test_request_context(base_url="http://farm.test/"):
        from webapp.extensions import db

        started = time.perf_counter()
        state = JobState.load(db.session, db.session.get(Job, job_id))
        snapshot = json.dumps(state.snapshot())
        loaded = time.perf_counter() - started
        assert len(state.chunks) == SHOWN_CHUNKS + 1 and CHUNKS - 1 in state.chunks

        with database.session() as session:
            states.cancel_job(session, job_id, actor="scale")  # timed below, on a job of its own
        db.session.expire_all()
        started = time.perf_counter()
        update = state.advance(db.session, db.session.get(Job, job_id))
        advanced = time.perf_counter() - started
        assert len(update["chunks"]) == SHOWN_CHUNKS and {c["status"] for c in update["chunks"]} == {"CANCELED"}

    other = make_job(database, CHUNKS, 1)
    started = time.perf_counter()
    with database.session() as session:
        states.cancel_job(session, other, actor="scale")
    canceled = time.perf_counter() - started
    with database.session() as session:
        by_status = select(Chunk.status, func.count()).where(Chunk.job_id == other).group_by(Chunk.status)
        counts = {status: count for status, count in session.execute(by_status)}
        events = session.scalar(select(func.count()).where(Event.job_id == other, Event.kind == "chunk"))
    assert counts == {ChunkStatus.CANCELED: CHUNKS} and events == CHUNKS
    print(
        f"\n{CHUNKS:,} chunks: GET .../chunks {read * 1000:.0f} ms; live snapshot {loaded * 1000:.0f} ms "
        f"({len(snapshot) / 1024:.0f} KiB); the update after a cancel {advanced * 1000:.0f} ms; "
        f"cancel of {CHUNKS:,} queued chunks {canceled:.2f} s"
    )
