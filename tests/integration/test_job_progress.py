"""Job progress and ETA as the API reports them, from chunk and frame rows in Postgres: progress moves with the
part of a frame Blender has rendered (only while its chunk renders, and only as that attempt reported it), and the
ETA shares what is left among the rendering workers at each one's own pace."""

from datetime import timedelta

from sqlalchemy import func, select, update

from farm.jobs import progress, states
from farm.models import Chunk, Job
from tests.rows import make_job


def claim(database, job_id: str, index: int, worker: str) -> int:
    with database.session() as session:
        chunk = session.scalars(select(Chunk).where(Chunk.job_id == job_id, Chunk.index == index)).one()
        assert states.claim_chunk(session, chunk.id, worker, f"task-{index}") is not None
        return chunk.id


def done(database, job_id: str, frame: int, worker: str, ms: float) -> None:
    with database.session() as session:
        assert states.frame_done(
            session, job_id, frame, worker=worker, render_time_ms=ms, device="CPU",
            image_key=f"jobs/{job_id}/frames/{frame:04d}.png", sha256="0" * 64, size=1,
        )  # fmt: skip


def pace(database, job_id: str) -> progress.Pace:
    with database.session() as session:
        job = session.get(Job, job_id)
        return progress.paces(session, [job])[job_id]


def test_progress_moves_inside_a_frame_and_eta_favours_the_faster_worker(database):
    job_id = make_job(database, frames=10, chunk_size=2, name="eta")  # chunks 1-2, 3-4, ... 9-10
    assert pace(database, job_id) == progress.Pace(running=0, progress=0.0, eta_seconds=None)  # no pace yet

    fast, slow = claim(database, job_id, 0, "fast@test"), claim(database, job_id, 1, "slow@test")
    done(database, job_id, 1, "fast@test", 1000.0)
    done(database, job_id, 3, "slow@test", 4000.0)
    with database.session() as session:  # fast is half-way through frame 2, slow a quarter through frame 4
        assert states.chunk_progress(session, job_id, fast, "fast@test", 1, 0.5, 75.0)
        assert states.chunk_progress(session, job_id, slow, "slow@test", 1, 0.25, 62.5)
        assert not states.chunk_progress(session, job_id, slow, "fast@test", 1, 0.99, 99.0)  # not its chunk
    now = pace(database, job_id)
    assert now.running == 2 and now.progress == 27.5  # (2 frames + 0.5 + 0.25) of 10
    # left: 0.5 frame on fast (1 s/frame), 0.75 on slow (4 s/frame), 6 queued: 7.25 frames at 1 + 0.25 frames/s
    assert now.eta_seconds == 5.8
    average_only = 8 * 2500 / 1000 / 2  # what the old estimate said: frames left × the average over busy slots
    assert now.eta_seconds < average_only

    with database.session() as session:
        chunk = session.get(Chunk, slow)
        states.finish_chunk(session, chunk, states.C.FAILED, worker="slow@test", reason="test", attempt=1)
    later = pace(database, job_id)
    assert later.running == 1 and later.progress == 25.0  # a failed chunk's part-frame no longer counts
    with database.session() as session:
        row = session.get(Chunk, slow)
        assert row.frame_progress == 0.0


def test_during_the_first_frame_the_eta_comes_from_that_frames_progress(database):
    job_id = make_job(database, frames=2, chunk_size=2, name="first")
    chunk_id = claim(database, job_id, 0, "w@test")
    with database.session() as session:
        session.execute(update(Chunk).where(Chunk.id == chunk_id).values(started_at=func.now() - timedelta(seconds=10)))
        assert states.chunk_progress(session, job_id, chunk_id, "w@test", 1, 0.02, 1.0)
    assert pace(database, job_id).eta_seconds is None  # 2 % of a frame is too little to judge a pace by
    with database.session() as session:
        assert states.chunk_progress(session, job_id, chunk_id, "w@test", 1, 0.5, 25.0)
    first = pace(database, job_id)
    assert first.progress == 25.0
    # half a frame in 10 s: 20 s a frame, and 1.5 frames left
    assert first.eta_seconds is not None and 29 <= first.eta_seconds <= 32
