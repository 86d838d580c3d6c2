"""A split still's parts in the database: each chunk holds the part of the attempt that renders it now, so a part
rendered twice (its first renderer lost the chunk, another took it) counts once; the job's progress counts parts."""

from farm.jobs import progress, states
from farm.models import Chunk, ChunkStatus, Job
from tests.rows import add_job


def test_a_part_is_recorded_only_by_the_attempt_that_holds_its_chunk(database):
    with database.session() as session:
        job_id = add_job(session, frames=1, chunk_size=1)
        chunk = session.query(Chunk).filter_by(job_id=job_id, index=0).one()
        assert states.claim_chunk(session, chunk.id, "a@test", "task-1") is not None
        assert states.part_done(session, job_id, chunk.id, "a@test", 1, {"key": "first"})
        assert states.requeue_chunk(session, chunk, task_id="task-2", reason="a stopped heartbeating", actor="test")
        assert states.claim_chunk(session, chunk.id, "b@test", "task-2") is not None
        assert not states.part_done(session, job_id, chunk.id, "a@test", 1, {"key": "late"})  # a's late report
        assert session.get(Chunk, chunk.id).part == {"key": "first"}  # until b stores its own
        assert states.part_done(session, job_id, chunk.id, "b@test", 2, {"key": "second"})
        assert session.get(Chunk, chunk.id).part == {"key": "second"}


def test_a_split_stills_progress_counts_its_parts(database):
    with database.session() as session:
        job_id = add_job(session, frames=1, chunk_size=1)
        job = session.get(Job, job_id)
        job.split = 4
        for index in range(1, 4):
            session.add(Chunk(job_id=job_id, index=index, frame_start=1, frame_end=1))
        session.flush()
        chunks = session.query(Chunk).filter_by(job_id=job_id).order_by(Chunk.index).all()
        for chunk in chunks[:2]:
            assert states.claim_chunk(session, chunk.id, "a@test", f"task-{chunk.index}") is not None
        assert states.finish_chunk(session, chunks[0], ChunkStatus.DONE, worker="a@test")
        chunks[1].frame_progress = 0.5
        session.flush()
        pace = progress.paces(session, [job])[job_id]
        assert pace.running == 1 and pace.progress == 37.5  # (1 part done + half of one) of 4
