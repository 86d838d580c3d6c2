"""The state machine on the real Postgres: legal moves, illegal ones refused, races won exactly once."""

import threading
import uuid

import pytest
from sqlalchemy import func, select

from farm.clock import database_now
from farm.errors import IllegalTransition
from farm.jobs import states
from farm.models import Chunk, ChunkStatus, Event, Frame, FrameStatus, Job, JobStatus, Worker, WorkerStatus
from tests.conftest import RUN_ID
from tests.rows import add_job


@pytest.fixture()
def job_id(database):
    with database.session() as session:
        return add_job(session, 6, 2, queue=f"states-{RUN_ID}")


def chunk_ids(database, job_id):
    with database.session() as session:
        return list(session.scalars(select(Chunk.id).where(Chunk.job_id == job_id).order_by(Chunk.index)))


def job_status(database, job_id):
    with database.session() as session:
        return session.get(Job, job_id).status


def test_claim_starts_chunk_job_and_frames(database, job_id):
    first = chunk_ids(database, job_id)[0]
    with database.session() as session:
        claim = states.claim_chunk(session, first, "ws1@states", "task-1", log_key=lambda c, n: f"{c.index}-{n}")
        chunk = claim.chunk
        assert chunk.status == ChunkStatus.RENDERING and chunk.attempts == 1 and chunk.worker == "ws1@states"
        assert claim.frames == [1, 2] and claim.job.id == job_id
    with database.session() as session:
        assert session.get(Chunk, first).log_key == "0-1"
    with database.session() as session:
        job = session.get(Job, job_id)
        assert job.status == JobStatus.RENDERING and job.worker_host == "ws1@states"
        frames = session.scalars(select(Frame.status).where(Frame.chunk_id == first)).all()
        assert set(frames) == {FrameStatus.RENDERING}
        trail = session.execute(select(Event.kind, Event.old, Event.new).where(Event.job_id == job_id)).all()
        assert ("chunk", "QUEUED", "RENDERING") in trail and ("job", "QUEUED", "RENDERING") in trail


@pytest.mark.commits  # threads race on their own connections: the real database
def test_a_chunk_is_claimed_once_even_when_racing(database, job_id):
    first = chunk_ids(database, job_id)[0]
    winners = []
    barrier = threading.Barrier(4)

    def claim(name):
        barrier.wait()
        with database.session() as session:
            if states.claim_chunk(session, first, name, None) is not None:
                winners.append(name)

    threads = [threading.Thread(target=claim, args=(f"ws{i}@states",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1


def test_frame_done_counts_each_frame_once(database, job_id):
    first = chunk_ids(database, job_id)[0]
    with database.session() as session:
        states.claim_chunk(session, first, "ws1@states", None)
    kwargs = dict(worker="ws1@states", render_time_ms=100.0, device="CPU", image_key="k", sha256="a" * 64, size=1)
    with database.session() as session:
        assert states.frame_done(session, job_id, 1, **kwargs) is True
        assert states.frame_done(session, job_id, 1, **kwargs) is False
        assert states.frame_done(session, job_id, 2, **dict(kwargs, render_time_ms=300.0)) is True
    with database.session() as session:
        job = session.get(Job, job_id)
        assert (job.frames_rendered, job.render_ms_total, job.latest_frame) == (2, 400.0, 2)


def job_version(database, job_id):
    with database.session() as session:
        return session.get(Job, job_id).version


@pytest.mark.commits  # counts real transactions, which a savepoint is not
def test_every_change_of_a_job_bumps_its_version_once(database, job_id):
    """Live pages follow `version`: each frame, a chunk's end, a touch and a move each add one, and a touch reports
    the status the same transaction's move left."""
    first = chunk_ids(database, job_id)[0]
    with database.session() as session:
        chunk = states.claim_chunk(session, first, "ws1@states", None).chunk
    kwargs = dict(worker="ws1@states", render_time_ms=5.0, device="CPU", image_key="k", sha256="a" * 64, size=1)
    before = job_version(database, job_id)
    with database.session() as session:
        assert states.frame_done(session, job_id, 1, **kwargs) and states.frame_done(session, job_id, 2, **kwargs)
        assert states.finish_chunk(session, chunk, ChunkStatus.DONE, worker="ws1@states") == JobStatus.RENDERING
    assert job_version(database, job_id) == before + 3  # one per frame, one for the chunk's end
    with database.sessions() as session:  # one session, two transactions
        with session.begin():
            assert states.touch_job(session, job_id) == JobStatus.RENDERING
            assert states.move_job(session, job_id, JobStatus.PACKAGING)
            assert states.touch_job(session, job_id) == JobStatus.PACKAGING  # the move is seen, not the old status
        with session.begin():
            assert states.touch_job(session, job_id) == JobStatus.PACKAGING
    assert job_version(database, job_id) == before + 3 + 4


def test_claim_admits_before_it_writes(database, job_id):
    first, second, _ = chunk_ids(database, job_id)
    seen = []

    def refuse(found):
        seen.append(found)
        raise LookupError("refused")

    kept = dict(worker="ws1@states", render_time_ms=1.0, device="CPU", image_key="k", sha256="a" * 64)
    with database.session() as session:
        chunk = states.claim_chunk(session, first, "ws1@states", None).chunk
        states.frame_done(session, job_id, 1, size=1000, **kept)
        states.frame_done(session, job_id, 2, size=3000, **kept)
        states.finish_chunk(session, chunk, ChunkStatus.FAILED, worker="ws1@states", reason="boom")
    with database.session() as session, pytest.raises(LookupError):
        states.claim_chunk(session, second, "ws1@states", None, admit=refuse)
    with database.session() as session:
        states.claim_chunk(session, second, "other@states", None, admit=seen.append)
    # the job's frames so far average 2000 bytes: what the worker's disk needs room for, per frame of the chunk
    assert seen == [
        states.Admission(disabled=False, failed=1, frames=2, frame_bytes=2000.0),
        states.Admission(disabled=False, failed=0, frames=2, frame_bytes=2000.0),
    ]
    with database.session() as session:
        assert session.get(Chunk, second).worker == "other@states"  # the refusal wrote nothing


def test_failed_chunk_fails_job_and_stops_queued_chunks(database, job_id):
    first, *rest = chunk_ids(database, job_id)
    with database.session() as session:
        chunk = states.claim_chunk(session, first, "ws1@states", None).chunk
        states.finish_chunk(session, chunk, ChunkStatus.FAILED, worker="ws1@states", reason="boom")
        assert states.fail_job(session, job_id, "chunk 0 failed: boom", actor="ws1@states")
    with database.session() as session:
        job = session.get(Job, job_id)
        assert job.status == JobStatus.FAILED and job.error == "chunk 0 failed: boom" and job.finished_at
        assert {session.get(Chunk, c).status for c in rest} == {ChunkStatus.CANCELED}
        assert set(session.scalars(select(Frame.status).where(Frame.chunk_id == first))) == {FrameStatus.FAILED}


def test_a_stale_chord_failure_does_not_fail_the_current_run(database, job_id):
    first, second, _ = chunk_ids(database, job_id)
    with database.session() as session:
        states.claim_chunk(session, first, "ws1@states", "task-now")
        session.get(Chunk, second).task_id = "task-also-now"
    stale = [
        "a render task crashed: ChordError(\"TaskRevokedError('revoked')\")",  # a cancel's revoked tasks
        "a render task crashed: ChordError(\"Dependency task-before-retry raised KeyError('x')\")",  # replaced
    ]
    with database.session() as session:
        assert not any(states.fail_job_for_chord(session, job_id, r, actor="ws1@states") for r in stale)
    assert job_status(database, job_id) == JobStatus.RENDERING
    with database.session() as session:
        current = "a render task crashed: ChordError(\"Dependency task-now raised KeyError('x')\")"
        assert states.fail_job_for_chord(session, job_id, current, actor="ws1@states")
    assert job_status(database, job_id) == JobStatus.FAILED


def test_cancel_waits_for_running_chunks(database, job_id):
    first = chunk_ids(database, job_id)[0]
    with database.session() as session:
        chunk = states.claim_chunk(session, first, "ws1@states", None).chunk
        states.cancel_job(session, job_id, actor="user")
    assert job_status(database, job_id) == JobStatus.CANCELING
    with database.session() as session:
        assert not states.settle_cancel(session, job_id, actor="ws1@states")  # still rendering
        states.finish_chunk(session, chunk, ChunkStatus.CANCELED, worker="ws1@states", reason="canceled")
        assert states.settle_cancel(session, job_id, actor="ws1@states")
    assert job_status(database, job_id) == JobStatus.CANCELED


def test_cancel_without_running_chunks_is_immediate(database, job_id):
    with database.session() as session:
        states.cancel_job(session, job_id, actor="user")
    assert job_status(database, job_id) == JobStatus.CANCELED


def test_completed_jobs_cannot_be_canceled_or_retried(database, job_id):
    with database.session() as session:
        for status in (JobStatus.PACKAGING, JobStatus.UPLOADING):
            assert states.move_job(session, job_id, status)
        assert states.complete_job(session, job_id, asset_key="k", asset_filename="f.zip", asset_size=1, actor="w")
    with database.session() as session, pytest.raises(IllegalTransition):
        states.cancel_job(session, job_id, actor="user")
    with database.session() as session, pytest.raises(IllegalTransition):
        states.retry_job(session, job_id, actor="user")


@pytest.mark.parametrize(
    ("old", "new"), [(JobStatus.QUEUED, JobStatus.COMPLETED), (JobStatus.QUEUED, JobStatus.UPLOADING)]
)
def test_illegal_job_moves_are_refused(database, job_id, old, new):
    assert job_status(database, job_id) == old
    with database.session() as session:
        assert states.move_job(session, job_id, new) is False
        with pytest.raises(IllegalTransition):
            states.move_job(session, job_id, new, strict=True)
    assert job_status(database, job_id) == old


def test_retry_requeues_only_unfinished_chunks(database, job_id):
    first, second, third = chunk_ids(database, job_id)
    with database.session() as session:
        chunk = states.claim_chunk(session, first, "ws1@states", None).chunk
        for frame in (1, 2):
            states.frame_done(
                session,
                job_id,
                frame,
                worker="ws1@states",
                render_time_ms=5,
                device="CPU",
                image_key="k",
                sha256="a" * 64,
                size=1,
            )
        states.finish_chunk(session, chunk, ChunkStatus.DONE, worker="ws1@states")
        chunk = states.claim_chunk(session, second, "ws1@states", None).chunk
        states.finish_chunk(session, chunk, ChunkStatus.FAILED, worker="ws1@states", reason="boom")
        states.fail_job(session, job_id, "boom", actor="ws1@states")
    with database.session() as session:
        assert sorted(states.retry_job(session, job_id, actor="user")) == [second, third]
    with database.session() as session:
        job = session.get(Job, job_id)
        assert job.status == JobStatus.QUEUED and job.error is None and job.frames_rendered == 2
        assert session.get(Chunk, first).status == ChunkStatus.DONE
        assert session.get(Chunk, second).status == ChunkStatus.QUEUED
        rows = dict(session.execute(select(Frame.frame, Frame.status).where(Frame.job_id == job_id)).all())
        # the third chunk was never claimed: its frames have no rows yet, and are QUEUED all the same
        assert rows == {1: FrameStatus.DONE, 2: FrameStatus.DONE, 3: FrameStatus.QUEUED, 4: FrameStatus.QUEUED}
    with database.session() as session:  # each claim renders exactly its frames not DONE
        assert states.claim_chunk(session, second, "ws2@states", None).frames == [3, 4]
        assert states.claim_chunk(session, third, "ws2@states", None).frames == [5, 6]


def test_worker_lifecycle(database):
    name = f"w-{uuid.uuid4().hex[:6]}@test"
    with database.session() as session:
        states.register_worker(session, name, devices=["CPU"], queues=["farm"], pid=1)
    with database.session() as session:
        states.set_worker_enabled(session, name, False, actor="user")
        states.heartbeat(session, name)
    with database.session() as session:
        assert session.get(Worker, name).status == WorkerStatus.DISABLED  # heartbeats do not re-enable
        states.set_worker_enabled(session, name, True, actor="user")
        assert states.worker_offline(session, name, "stopped heartbeating")
    with database.session() as session:
        assert session.get(Worker, name).status == WorkerStatus.OFFLINE
        states.heartbeat(session, name)
    with database.session() as session:
        assert session.get(Worker, name).status == WorkerStatus.ONLINE
        kinds = session.execute(select(Event.old, Event.new).where(Event.subject == name).order_by(Event.id)).all()
        assert kinds == [
            (None, "ONLINE"),
            ("ONLINE", "DISABLED"),
            ("DISABLED", "ONLINE"),
            ("ONLINE", "OFFLINE"),
            ("OFFLINE", "ONLINE"),
        ]


def test_a_renderer_that_lost_its_claim_records_and_ends_nothing(database, job_id):
    """A is cut off from the database; the janitor re-queues its chunk and B claims it. When A comes back, neither
    its frame, nor its chunk's end, nor its retry touches B's attempt."""
    first = chunk_ids(database, job_id)[0]
    stored = dict(render_time_ms=1.0, device="CPU", image_key="k", sha256="a" * 64, size=1)
    with database.session() as session:
        lost = states.claim_chunk(session, first, "a@states", None).chunk  # attempt 1, as A keeps it
        states.requeue_chunk(session, lost, task_id="t2", reason="its renderer stopped heartbeating", actor="j")
    with database.session() as session:
        assert states.claim_chunk(session, first, "b@states", None).chunk.attempts == 2
    with database.session() as session:
        assert not states.frame_done(session, job_id, 1, worker="a@states", attempt=1, **stored)
        assert not states.chunk_heartbeat(session, first, "a@states", 1)
        assert states.finish_chunk(session, lost, ChunkStatus.FAILED, worker="a@states", attempt=1) is None
        assert not states.requeue_chunk(session, lost, task_id="t3", reason="retry", actor="a@states")
    with database.session() as session:
        chunk = session.get(Chunk, first)
        assert (chunk.status, chunk.worker, chunk.attempts) == (ChunkStatus.RENDERING, "b@states", 2)
        assert states.frame_done(session, job_id, 1, worker="b@states", attempt=2, **stored)
        assert states.chunk_heartbeat(session, first, "b@states", 2)


def test_heartbeats_and_claims_carry_the_database_clock(database, job_id):
    """Postgres' now() is its transaction's start: what a heartbeat or a claim writes is exactly that, whatever
    the writing machine's clock says."""
    name = f"clock-{uuid.uuid4().hex[:6]}@states"
    first = chunk_ids(database, job_id)[0]
    with database.session() as session:
        states.register_worker(session, name, devices=[], queues=[], pid=1, memory_bytes=2**30)
        states.heartbeat(session, name, clock_offset=-90.0)
        chunk = states.claim_chunk(session, first, name, None).chunk
        now = database_now(session)
    with database.session() as session:
        worker = session.get(Worker, name)
        assert worker.last_heartbeat == now and worker.clock_offset == -90.0 and worker.memory_bytes == 2**30
        assert session.get(Chunk, chunk.id).heartbeat_at == now


def chunk_rows(database, job_id):
    with database.session() as session:
        return {c.index: c for c in session.scalars(select(Chunk).where(Chunk.job_id == job_id))}


@pytest.mark.parametrize("stop", ["cancel", "fail"])
def test_a_stop_cancels_every_queued_chunk_at_once_as_one_by_one(database, stop):
    """Cancel and fail move the queued chunks in one statement, to what `move_chunk` made of each: CANCELED, ended
    now, no renderer's heartbeat, started and dispatched as they were, one event each in index order, stamped
    with the job's version; a rendering, a done and a failed chunk are left as they are."""
    with database.session() as session:
        job_id = add_job(session, 12, 2, queue=f"states-{RUN_ID}")
    ids = chunk_ids(database, job_id)
    with database.session() as session:
        for index in (0, 1, 2):
            states.claim_chunk(session, ids[index], "ws1@states", None)
        rows = chunk_rows(database, job_id)
        states.finish_chunk(session, rows[1], ChunkStatus.DONE, worker="ws1@states")
        states.finish_chunk(session, rows[2], ChunkStatus.FAILED, worker="ws1@states", reason="boom")
        states.requeue_chunk(session, rows[2], task_id="again", reason="retry", actor="ws1@states")  # tried before
    before = chunk_rows(database, job_id)
    assert [before[i].status for i in range(6)] == ["RENDERING", "DONE", "QUEUED", "QUEUED", "QUEUED", "QUEUED"]
    with database.session() as session:
        events_before = session.scalar(select(func.max(Event.id)))
        if stop == "cancel":
            states.cancel_job(session, job_id, actor="user")
        else:
            assert states.fail_job(session, job_id, "chunk 2 failed", actor="ws1@states")
        # the session's own objects of moved chunks read the change, as after move_chunk
        assert session.get(Chunk, ids[3]).status == ChunkStatus.CANCELED
    after = chunk_rows(database, job_id)
    with database.session() as session:
        job = session.get(Job, job_id)
        now = database_now(session)
        events = session.scalars(select(Event).where(Event.id > events_before).order_by(Event.id)).all()
    assert job.status == (JobStatus.CANCELING if stop == "cancel" else JobStatus.FAILED)
    for index in (0, 1):
        assert after[index].status == before[index].status and after[index].job_version == before[index].job_version
    for index in range(2, 6):
        chunk, was = after[index], before[index]
        assert chunk.status == ChunkStatus.CANCELED and chunk.heartbeat_at is None and chunk.finished_at
        assert abs((now - chunk.finished_at).total_seconds()) < 60  # the database's clock
        assert (chunk.started_at, chunk.dispatched_at, chunk.attempts, chunk.task_id, chunk.worker) == (
            was.started_at, was.dispatched_at, was.attempts, was.task_id, was.worker
        )  # fmt: skip
        assert chunk.job_version == job.version > was.job_version
    reason, actor = ("job canceled", "user") if stop == "cancel" else ("job failed", "ws1@states")
    assert [(e.kind, e.subject, e.job_id, e.old, e.new, e.reason, e.actor) for e in events] == [
        ("job", job_id, job_id, "RENDERING", job.status, "canceled by user" if stop == "cancel" else "chunk 2 failed",
         "user" if stop == "cancel" else "ws1@states"),
        *[("chunk", f"{job_id}/{i}", job_id, "QUEUED", "CANCELED", reason, actor) for i in range(2, 6)],
    ]  # fmt: skip


def test_every_change_a_page_shows_stamps_the_chunk_with_its_jobs_version(database, job_id):
    """Live views read the chunks stamped past the last they saw: a claim, progress, a stored part, an end and a
    requeue each stamp the chunk with the version of the job they touched; a heartbeat (not shown) does not."""
    first, second, _ = chunk_ids(database, job_id)

    def stamp(chunk_id: int) -> tuple[int, int]:
        with database.session() as session:
            return session.get(Chunk, chunk_id).job_version, session.get(Job, job_id).version

    assert stamp(first) == (0, 0)
    with database.session() as session:
        claimed = states.claim_chunk(session, first, "ws1@states", None).chunk
        states.claim_chunk(session, second, "ws2@states", None)
    stamped, version = stamp(first)
    assert 0 < stamped <= version and stamp(second)[0] > stamped  # the later change, the later stamp
    steps = [
        lambda s: states.chunk_progress(s, job_id, first, "ws1@states", 1, 0.5, 25.0),
        lambda s: states.part_done(s, job_id, first, "ws1@states", 1, {"key": "k"}),
        lambda s: states.finish_chunk(s, claimed, ChunkStatus.FAILED, worker="ws1@states", reason="boom"),
        lambda s: states.requeue_chunk(s, s.get(Chunk, first), task_id="t2", reason="retry", actor="ws1@states"),
    ]
    for step in steps:
        with database.session() as session:
            assert step(session)
        now_stamped, version = stamp(first)
        assert now_stamped == version > stamped
        stamped = now_stamped
    with database.session() as session:
        states.claim_chunk(session, first, "ws1@states", None)
    stamped, _ = stamp(first)
    with database.session() as session:
        assert states.chunk_heartbeat(session, first, "ws1@states", 2)
    assert stamp(first)[0] == stamped
