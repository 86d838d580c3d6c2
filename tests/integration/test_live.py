"""The job's live stream (Server-Sent Events) on the real Postgres: a snapshot, then only what changed, then `end`;
plain requests still get the JSON audit trail; and any number of subscribers share one watcher's queries."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import event

from farm.jobs import states
from farm.models import Chunk, ChunkStatus, Job, JobStatus
from tests.helpers import wait_until
from tests.rows import claim_first_chunk, make_job, render_frame
from webapp.live import SHOWN_CHUNKS, SHOWN_FRAMES, JobState, watcher

# The app's watcher thread queries while the test writes, and statements are counted on the app's own engine: the
# real database, not one connection shared across threads.
pytestmark = pytest.mark.commits

STREAM = {"Accept": "text/event-stream"}


class Events:
    """Reads `event:`/`data:` blocks off a streaming test-client response."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self.chunks: Iterator[bytes] = iter(response.response)
        self.buffer = ""

    def next(self) -> tuple[str, dict[str, Any]]:
        """The next block: (event, data), or ("", {}) for a comment or the retry line."""
        while "\n\n" not in self.buffer:
            chunk = next(self.chunks)
            self.buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        block, self.buffer = self.buffer.split("\n\n", 1)
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" not in fields:  # retry: or a keepalive comment
            return "", {}
        return fields["event"], json.loads(fields["data"])

    def until(self, kind: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, f"no {kind} event within {timeout} s"
            got, data = self.next()
            if got == kind:
                return data


@pytest.fixture()
def open_stream(client):  # type: ignore[no-untyped-def]
    opened: list[Any] = []

    def open_(job_id: str) -> Events:
        response = client.get(f"/api/jobs/{job_id}/events", headers=STREAM, buffered=False)
        assert response.status_code == 200 and response.mimetype == "text/event-stream"
        opened.append(response)
        return Events(response)

    yield open_
    for response in opened:
        response.close()


def test_plain_request_still_gets_the_json_audit_trail(client, database):
    job_id = make_job(database, 4, 2)
    response = client.get(f"/api/jobs/{job_id}/events")
    assert response.mimetype == "application/json"
    assert [(e["kind"], e["to"]) for e in response.get_json()["events"]] == []  # made without job_created
    render_frame(database, job_id, 1)
    assert [(e["kind"], e["to"]) for e in client.get(f"/api/jobs/{job_id}/events").get_json()["events"]] == [
        ("frame", "DONE")
    ]
    assert client.get("/api/jobs/nope/events", headers=STREAM).status_code == 404


def test_stream_sends_a_snapshot_then_only_changes_then_end(open_stream, database):
    job_id = make_job(database, 6, 3)
    render_frame(database, job_id, 1)
    events = open_stream(job_id)
    snapshot = events.until("snapshot")
    assert snapshot["job"]["id"] == job_id and snapshot["job"]["render"]["frames_rendered"] == 1
    assert [c["status"] for c in snapshot["chunks"]] == ["QUEUED", "QUEUED"]
    assert [f["frame"] for f in snapshot["frames"]] == [1]
    assert snapshot["links"]["thumbnail"].endswith(f"/api/jobs/{job_id}/frames/{{frame}}/thumbnail")

    claim_first_chunk(database, job_id)
    render_frame(database, job_id, 2)
    seen_frames: list[int] = []
    seen_chunks: list[tuple[int, str]] = []
    deadline = time.monotonic() + 10
    while 2 not in seen_frames or (0, "RENDERING") not in seen_chunks:
        assert time.monotonic() < deadline, (seen_frames, seen_chunks)
        update = events.until("update")
        seen_frames += [f["frame"] for f in update["frames"]]
        seen_chunks += [(c["index"], c["status"]) for c in update["chunks"]]
    assert 1 not in seen_frames  # only what changed
    assert update["job"]["render"]["frames_rendered"] == 2 and update["job"]["status"] == "RENDERING"

    with database.session() as session:
        states.cancel_job(session, job_id, actor="test")
        chunk = session.query(Chunk).filter_by(job_id=job_id, index=0).one()
        states.finish_chunk(session, chunk, ChunkStatus.CANCELED, worker="w@test", reason="canceled")
        states.settle_cancel(session, job_id, actor="test")
    assert events.until("end") == {"status": JobStatus.CANCELED}


def test_the_stream_of_a_large_job_carries_only_the_frames_its_page_shows(open_stream, database):
    beyond = SHOWN_FRAMES + 5  # past the window the page draws: counted in the job, never streamed
    job_id = make_job(database, SHOWN_FRAMES + 1000, 1000)
    for frame in (1, beyond):
        render_frame(database, job_id, frame)
    events = open_stream(job_id)
    snapshot = events.until("snapshot")
    assert [f["frame"] for f in snapshot["frames"]] == [1] and snapshot["job"]["render"]["frames_rendered"] == 2
    assert len(snapshot["chunks"]) == 6
    for frame in (beyond + 1, 2):
        render_frame(database, job_id, frame)
    seen: list[int] = []
    while 2 not in seen:
        update = events.until("update")
        seen += [f["frame"] for f in update["frames"]]
    assert seen == [2] and update["job"]["render"]["frames_rendered"] == 4


def claim(database: Any, job_id: str, index: int, worker: str = "w@test") -> Chunk:
    with database.session() as session:
        chunk = session.query(Chunk).filter_by(job_id=job_id, index=index).one()
        assert states.claim_chunk(session, chunk.id, worker, None) is not None
        session.expunge(chunk)
        return chunk


def finish(database: Any, chunk: Chunk, status: ChunkStatus, reason: str | None = None) -> None:
    with database.session() as session:
        states.finish_chunk(session, session.merge(chunk), status, worker="w@test", reason=reason)


def test_the_stream_of_a_job_of_many_chunks_carries_those_its_page_shows(open_stream, database):
    """The first SHOWN_CHUNKS and every rendering or failed one: a chunk beyond is sent while it renders, its end
    once, and then no more."""
    job_id = make_job(database, SHOWN_CHUNKS + 300, 1)
    far, farther = SHOWN_CHUNKS + 100, SHOWN_CHUNKS + 200
    finish(database, claim(database, job_id, far), ChunkStatus.FAILED, "boom")
    claim(database, job_id, 3)
    events = open_stream(job_id)
    snapshot = events.until("snapshot")
    assert [c["index"] for c in snapshot["chunks"]] == [*range(SHOWN_CHUNKS), far]
    assert snapshot["chunks"][3]["status"] == "RENDERING" and snapshot["chunks"][-1]["error"] == "boom"

    started = claim(database, job_id, farther)
    seen = events.until("update")["chunks"]
    while not seen:
        seen = events.until("update")["chunks"]
    assert [(c["index"], c["status"]) for c in seen] == [(farther, "RENDERING")]
    finish(database, started, ChunkStatus.DONE)
    claim(database, job_id, SHOWN_CHUNKS + 250)  # never shown, and not rendering once the job is canceled
    with database.session() as session:
        states.cancel_job(session, job_id, actor="test")
    ends: list[tuple[int, str]] = []
    while (SHOWN_CHUNKS - 1, "CANCELED") not in ends:
        ends += [(c["index"], c["status"]) for c in events.until("update")["chunks"]]
    assert (farther, "DONE") in ends and (SHOWN_CHUNKS + 250, "RENDERING") in ends
    assert all(index < SHOWN_CHUNKS or index in (farther, SHOWN_CHUNKS + 250) for index, _ in ends), ends
    assert len([i for i, status in ends if status == "CANCELED"]) == SHOWN_CHUNKS - 1  # all but 3, which renders
    again = open_stream(job_id).until("snapshot")
    assert [c["index"] for c in again["chunks"]] == [*range(SHOWN_CHUNKS), far, SHOWN_CHUNKS + 250]


def test_an_update_reads_only_the_chunks_that_changed(app, database):
    """Each look at a job of thousands of chunks reads the rows of the chunks stamped since the last one, not all."""
    from webapp.extensions import db

    job_id = make_job(database, 3000, 1)
    chunk_rows: list[int] = []  # rows each read of the job's chunks returned

    def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().startswith("SELECT chunks.id"):
            chunk_rows.append(cursor.rowcount)

    with app.test_request_context(base_url="http://farm.test/"):
        state = JobState.load(db.session, db.session.get(Job, job_id))
        assert len(state.chunks) == SHOWN_CHUNKS
        event.listen(db.engine, "after_cursor_execute", count)
        try:
            for index in (5, 2500):
                claim(database, job_id, index)
                db.session.expire_all()
                update = state.advance(db.session, db.session.get(Job, job_id))
                assert [(c["index"], c["status"]) for c in update["chunks"]] == [(index, "RENDERING")]
            db.session.expire_all()
            assert state.advance(db.session, db.session.get(Job, job_id))["chunks"] == []  # nothing new, none read
        finally:
            event.remove(db.engine, "after_cursor_execute", count)
            db.session.rollback()
    print("rows of chunks read per statement:", chunk_rows)
    assert chunk_rows and max(chunk_rows) <= 2, chunk_rows  # the changed chunk (and the one rendering, for the JOB)


def test_a_finished_job_streams_its_snapshot_and_ends(open_stream, database):
    job_id = make_job(database, 2, 2)
    with database.session() as session:
        states.cancel_job(session, job_id, actor="test")
    events = open_stream(job_id)
    assert events.next() == ("", {})  # retry: 3000
    assert events.next()[0] == "snapshot"
    assert events.next() == ("end", {"status": "CANCELED"})


def test_many_subscribers_share_one_watchers_queries(app, database):
    """Twenty open pages cost the queries of one: count the web side's statements while frames finish."""
    from webapp.extensions import db

    hub = watcher(app)
    with app.app_context():
        engine = db.engine
    job_id = make_job(database, 40, 10)
    claim_first_chunk(database, job_id)
    base = "http://farm.test/"

    def statements_while_rendering(subscribers: int, frames: range) -> int:
        subs = [hub.subscribe(job_id, base, limit=100) for _ in range(subscribers)]
        received: dict[Any, set[int]] = {sub: set() for sub in subs}

        def everyone_has(frame: int) -> bool:
            for sub in subs:
                while not sub.inbox.empty():
                    received[sub].update(f["frame"] for f in sub.inbox.get()[1].get("frames", []))
            return all(frame in got for got in received.values())

        count = [0]

        def counted(*_: Any) -> None:
            count[0] += 1

        try:
            wait_until(lambda: all(s.has_snapshot for s in subs), timeout=10, what="every snapshot")
            event.listen(engine, "before_cursor_execute", counted)
            for frame in frames:
                render_frame(database, job_id, frame)
                wait_until(lambda f=frame: everyone_has(f), timeout=10, what=f"frame {frame} everywhere", interval=0.02)
        finally:
            event.remove(engine, "before_cursor_execute", counted)
            for sub in subs:
                hub.unsubscribe(job_id, base, sub)
        return count[0]

    one = statements_while_rendering(1, range(1, 5))
    twenty = statements_while_rendering(20, range(5, 9))
    print(f"statements for 4 frames: 1 subscriber {one}, 20 subscribers {twenty}")
    assert twenty < 2 * one + 10, (one, twenty)  # not twenty times the work


def test_streams_beyond_the_thread_budget_are_refused_so_pages_poll(app, client, database, open_stream):
    """Each open stream holds a web thread: past `max_streams` the API answers 503 JSON instead of hanging."""
    settings = app.extensions["farm"]
    app.extensions["farm"] = replace(settings, web_threads=2)  # 2 threads: one stream, one for the API
    try:
        job_id = make_job(database, 2, 2)
        first = open_stream(job_id)
        assert first.until("snapshot")["job"]["id"] == job_id
        refused = client.get(f"/api/jobs/{job_id}/events", headers=STREAM)
        assert refused.status_code == 503
        assert refused.get_json()["error"]["code"] == "too_many_streams"
        assert client.get(f"/api/jobs/{job_id}").status_code == 200  # the API itself still answers
    finally:
        app.extensions["farm"] = settings
