"""Every SQL statement the state machine runs, by name, as Flamenco names its queries.

Each is a plain SQLAlchemy Core statement built once, here, with named bind parameters (never named like a column:
SQLAlchemy keeps column names for the SET clause). An UPDATE's SET clause is what the statement says plus any
column named in the parameters it is run with: `MOVE_JOB` with `{"job": id, "old": "FAILED", "new": "QUEUED",
"error": None}` also clears `error`.

Times that say when something happened on the farm's one clock (heartbeats, claims, dispatches, ends) are the
database's `now()`, written by the statement itself.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, cast

from sqlalchemy import String, Table, bindparam, case, exists, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite

from farm.clock import db_now
from farm.jobs.scheduling import failed_by, since_requeued
from farm.models import (
    Chunk,
    ChunkStatus,
    Event,
    Frame,
    FrameStatus,
    FrameTally,
    Job,
    JobStatus,
    Worker,
    WorkerPace,
    WorkerStatus,
)

JOBS, CHUNKS, FRAMES, EVENTS, WORKERS, TALLIES, PACES = (
    cast(Table, m.__table__) for m in (Job, Chunk, Frame, Event, Worker, FrameTally, WorkerPace)
)
TERMINAL_JOB = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED)
ENDED_CHUNK = (ChunkStatus.DONE, ChunkStatus.FAILED, ChunkStatus.CANCELED)
UNFINISHED_CHUNK = (ChunkStatus.QUEUED, ChunkStatus.RENDERING, ChunkStatus.FAILED, ChunkStatus.CANCELED)

_NEW = bindparam("new", type_=String(16))  # the status a move goes to, also read by the times it sets

# --- jobs ------------------------------------------------------------------------------------------------------

# A job's status, its row locked until the transaction ends: what a move checks against the flow table. FOR NO KEY
# UPDATE, the lock an UPDATE of it takes: movers still queue on it, but rows that merely point at the job (a frame,
# a worker's pace: their foreign keys' share locks) do not, so no claim deadlocks with a frame being recorded.
JOB_STATUS = select(JOBS.c.status).where(JOBS.c.id == bindparam("job")).with_for_update(key_share=True)

# Every change of a job bumps `version` (what live pages follow) and `updated_at` (what the janitor judges by).
_JOB_CHANGED = {"version": JOBS.c.version + 1, "updated_at": db_now()}

# A job from `old` to `new`, compare-and-set; an ended job has the time it ended, any other none.
MOVE_JOB = (
    update(JOBS)
    .where(JOBS.c.id == bindparam("job"), JOBS.c.status == bindparam("old"))
    .values(
        status=_NEW,
        finished_at=case((_NEW.in_(TERMINAL_JOB), db_now()), else_=None),
        **_JOB_CHANGED,
    )
)

# Something about the job changed without a move (a chunk's end, a packager's lease, the columns passed): its status.
TOUCH_JOB = update(JOBS).where(JOBS.c.id == bindparam("job")).values(**_JOB_CHANGED).returning(JOBS.c.status)

# One more frame of the job is stored: the counts the job page shows; the job's status.
COUNT_FRAME = (
    update(JOBS)
    .where(JOBS.c.id == bindparam("job"))
    .values(
        frames_rendered=JOBS.c.frames_rendered + 1,
        render_ms_total=JOBS.c.render_ms_total + bindparam("ms"),
        latest_frame=bindparam("frame_number"),
        **_JOB_CHANGED,
    )
    .returning(JOBS.c.status)
)

# Packaging attempts since the job was last (re)queued: each begins with an event into PACKAGING.
PACKAGING_ATTEMPTS = select(func.count()).where(
    EVENTS.c.job_id == bindparam("job"),
    EVENTS.c.kind == "job",
    EVENTS.c.new == JobStatus.PACKAGING,
    since_requeued(bindparam("job")),
)

# --- chunks ----------------------------------------------------------------------------------------------------

# A chunk's status and attempt, its row locked: what a move checks, and which attempt it moves.
CHUNK_STATE = (
    select(CHUNKS.c.status, CHUNKS.c.attempts).where(CHUNKS.c.id == bindparam("chunk")).with_for_update(key_share=True)
)

# A chunk from `old` to `new` in the attempt it was read in (compare-and-set on both: a chunk claimed since is left
# alone). Claimed: when and its heartbeat now; queued again: dispatched now, no renderer; ended: when.
MOVE_CHUNK = (
    update(CHUNKS)
    .where(
        CHUNKS.c.id == bindparam("chunk"),
        CHUNKS.c.status == bindparam("old"),
        CHUNKS.c.attempts == bindparam("attempt"),
    )
    .values(
        status=_NEW,
        started_at=case((_NEW == ChunkStatus.RENDERING, db_now()), else_=CHUNKS.c.started_at),
        heartbeat_at=case((_NEW == ChunkStatus.RENDERING, db_now()), else_=None),
        dispatched_at=case((_NEW == ChunkStatus.QUEUED, db_now()), else_=CHUNKS.c.dispatched_at),
        finished_at=case((_NEW.in_(ENDED_CHUNK), db_now()), else_=None),
    )
)

# The job's version as this transaction sees it: after it bumped the version it holds the job's row, so no other
# change of the job commits between, and a chunk stamped with it (`job_version`) is stamped in commit order.
_JOB_VERSION = select(JOBS.c.version).where(JOBS.c.id == CHUNKS.c.job_id).scalar_subquery()

# Something a page shows about the chunk changed, and the transaction has touched its job: say so in its stamp.
STAMP_CHUNK = update(CHUNKS).where(CHUNKS.c.id == bindparam("chunk")).values(job_version=_JOB_VERSION)

# Every QUEUED chunk of a job is CANCELED at once, as MOVE_CHUNK would move each (no renderer; ended now), stamped
# (the caller moved the job first, so it holds the job's row); what each was, for its event and its task.
CANCEL_QUEUED = (
    update(CHUNKS)
    .where(CHUNKS.c.job_id == bindparam("job"), CHUNKS.c.status == ChunkStatus.QUEUED)
    .values(status=ChunkStatus.CANCELED, heartbeat_at=None, finished_at=db_now(), job_version=_JOB_VERSION)
    .returning(CHUNKS.c.id, CHUNKS.c.index)
)

# A RENDERING chunk whose renderer went silent changes hands: compare-and-set on the heartbeat that was read.
TAKE_OVER_CHUNK = (
    update(CHUNKS)
    .where(
        CHUNKS.c.id == bindparam("chunk"),
        CHUNKS.c.status == ChunkStatus.RENDERING,
        CHUNKS.c.heartbeat_at == bindparam("seen_heartbeat"),
    )
    .values(started_at=db_now(), heartbeat_at=db_now(), finished_at=None, error=None)
)

# The renderer of this attempt is alive; no row means the chunk is no longer its.
CHUNK_HEARTBEAT = (
    update(CHUNKS)
    .where(
        CHUNKS.c.id == bindparam("chunk"),
        CHUNKS.c.worker == bindparam("renderer"),
        CHUNKS.c.status == ChunkStatus.RENDERING,
        CHUNKS.c.attempts == bindparam("attempt"),
    )
    .values(heartbeat_at=db_now())
)

# How far the renderer of this attempt is within its frame and chunk (the columns passed); no row: not its chunk.
CHUNK_PROGRESS = update(CHUNKS).where(
    CHUNKS.c.id == bindparam("chunk"),
    CHUNKS.c.worker == bindparam("renderer"),
    CHUNKS.c.status == ChunkStatus.RENDERING,
    CHUNKS.c.attempts == bindparam("attempt"),
)

# A split still's part, stored by the renderer of this attempt (the `part` passed); no row: not its chunk any more.
PART_DONE = CHUNK_PROGRESS.values(part=bindparam("part"))

# A QUEUED chunk's lost task is replaced by a new one, compare-and-set on the old task id.
REPLACE_TASK = (
    update(CHUNKS)
    .where(
        CHUNKS.c.id == bindparam("chunk"),
        CHUNKS.c.status == ChunkStatus.QUEUED,
        CHUNKS.c.task_id.is_not_distinct_from(bindparam("old_task")),
    )
    .values(task_id=bindparam("new_task"), dispatched_at=db_now())
)

# What claiming a chunk needs, in one read: the chunk, its job, whether the claimer is DISABLED, how many of the
# job's chunks it failed since the job was last queued (the blocklist), the job's mean stored frame size (the
# claimer's disk), and the database's clock (is a RENDERING chunk's heartbeat stale). The mean is of at most
# SIZE_SAMPLE stored frames: an estimate for the disk, whose cost must not grow with the job (a claim of a
# 100,000-frame job's last chunk read every stored frame's row).
SIZE_SAMPLE = 100
_SIZES = (
    select(Frame.size)
    .where(Frame.job_id == Chunk.job_id, Frame.status == FrameStatus.DONE)
    .correlate(Chunk)
    .limit(SIZE_SAMPLE)
    .subquery()
)
CLAIMING = (
    select(
        Chunk,
        Job,
        select(Worker.status).where(Worker.hostname == bindparam("worker")).scalar_subquery() == WorkerStatus.DISABLED,
        failed_by(Chunk.job_id, bindparam("worker")),
        select(func.avg(_SIZES.c.size)).scalar_subquery(),
        db_now(),
    )
    .join(Job, Job.id == Chunk.job_id)
    .where(Chunk.id == bindparam("chunk"))
)

_OF_JOB = select(CHUNKS.c.id).where(CHUNKS.c.job_id == bindparam("job"))
# Whether any chunk of the job is not DONE, and whether any still waits for a renderer: two index probes.
CHUNKS_PENDING = select(
    exists(_OF_JOB.where(CHUNKS.c.status.in_(UNFINISHED_CHUNK))),
    exists(_OF_JOB.where(CHUNKS.c.status == ChunkStatus.QUEUED)),
)
CHUNKS_LEFT = select(func.count()).where(CHUNKS.c.job_id == bindparam("job"), CHUNKS.c.status.in_(UNFINISHED_CHUNK))
CHUNKS_RUNNING = select(func.count()).where(
    CHUNKS.c.job_id == bindparam("job"), CHUNKS.c.status == ChunkStatus.RENDERING
)
CHUNKS_OF_JOB = select(Chunk).where(
    Chunk.job_id == bindparam("job"), Chunk.status.in_(bindparam("among", expanding=True))
)

# --- frames ----------------------------------------------------------------------------------------------------


def _chunk_frames(dialect: ModuleType) -> Any:
    """The QUEUED rows of one chunk's frames, made by the database from the chunk's range (a recursive count, which
    both dialects run) when a worker claims the chunk, in the claim's transaction: a job is accepted with its chunks
    only, so a million-frame job costs its submission 10,000 rows, not a million. Rows an earlier attempt made (DONE
    frames among them) stay as they are (ON CONFLICT DO NOTHING). The chunk is the job's `index`th: a split still's
    parts share one frame, whose row is part 0's, so each part's claim names index 0. A frame with no row is one
    whose chunk was never claimed: QUEUED, as its row would say (`webapp.api.jobs.list_frames`)."""
    numbers = (
        select(CHUNKS.c.job_id, CHUNKS.c.id.label("chunk_id"), CHUNKS.c.frame_start.label("frame"), CHUNKS.c.frame_end)
        .where(CHUNKS.c.job_id == bindparam("job"), CHUNKS.c.index == bindparam("index"))
        .cte("numbers", recursive=True)
    )
    numbers = numbers.union_all(
        select(numbers.c.job_id, numbers.c.chunk_id, numbers.c.frame + 1, numbers.c.frame_end).where(
            numbers.c.frame < numbers.c.frame_end
        )
    )
    # The WHERE, always true, is SQLite's: an INSERT ... SELECT without one cannot take an ON CONFLICT clause.
    rows = select(numbers.c.job_id, numbers.c.chunk_id, numbers.c.frame, literal(FrameStatus.QUEUED.value)).where(
        numbers.c.frame <= numbers.c.frame_end
    )
    statement = dialect.insert(FRAMES).from_select(["job_id", "chunk_id", "frame", "status"], rows)
    return statement.on_conflict_do_nothing(index_elements=["job_id", "frame"])


# The frame rows of a chunk being claimed (or of the chunk holding a probe's frame), by dialect.
CHUNK_FRAMES = {"postgresql": _chunk_frames(postgresql), "sqlite": _chunk_frames(sqlite)}

# A chunk's frames in one of `among` become `new` (no events: one per frame per attempt would drown the trail).
MOVE_FRAMES = (
    update(FRAMES)
    .where(FRAMES.c.chunk_id == bindparam("chunk"), FRAMES.c.status.in_(bindparam("among", expanding=True)))
    .values(status=_NEW)
    .returning(FRAMES.c.frame)
)

# A frame is stored: what, where, by whom, how long it took. Never twice: a DONE frame stays as it is.
FRAME_DONE = (
    update(FRAMES)
    .where(
        FRAMES.c.job_id == bindparam("job"),
        FRAMES.c.frame == bindparam("frame_number"),
        FRAMES.c.status != FrameStatus.DONE,
    )
    .values(status=FrameStatus.DONE)
)
# The same, only while the frame's chunk renders on `renderer` in `attempt`: a renderer that lost its claim (the
# janitor gave the chunk to another worker while this one could not reach the database) records nothing.
FRAME_DONE_IN_CLAIM = FRAME_DONE.where(
    exists().where(
        CHUNKS.c.id == FRAMES.c.chunk_id,
        CHUNKS.c.status == ChunkStatus.RENDERING,
        CHUNKS.c.worker == bindparam("renderer"),
        CHUNKS.c.attempts == bindparam("attempt"),
    )
)


def _tally_frame(dialect: ModuleType) -> Any:
    """One more frame in the renderer's row of `frame_tallies`, made by its first: an upsert, which each dialect
    says in its own words (both ON CONFLICT ... DO UPDATE)."""
    statement = dialect.insert(TALLIES).values(worker=bindparam("renderer"), frames=1)
    return statement.on_conflict_do_update(index_elements=["worker"], set_={"frames": TALLIES.c.frames + 1})


# What `farm_frames_rendered_total` reads: frames ever recorded, per renderer. Counting the frames table instead
# would drop whenever a job is deleted, which Prometheus takes for a counter restarting from zero.
TALLY_FRAME = {"postgresql": _tally_frame(postgresql), "sqlite": _tally_frame(sqlite)}


def _pace_frame(dialect: ModuleType) -> Any:
    """One more frame, of `ms`, in the renderer's row of `worker_paces` for the job: an upsert, as above."""
    statement = dialect.insert(PACES).values(
        job_id=bindparam("job"), worker=bindparam("renderer"), frames=1, render_ms_total=bindparam("ms")
    )
    return statement.on_conflict_do_update(
        index_elements=["job_id", "worker"],
        set_={"frames": PACES.c.frames + 1, "render_ms_total": PACES.c.render_ms_total + bindparam("ms")},
    )


# Each worker's pace on each job, which the job's ETA reads (farm/jobs/progress.py).
PACE_FRAME = {"postgresql": _pace_frame(postgresql), "sqlite": _pace_frame(sqlite)}

# --- events and workers ----------------------------------------------------------------------------------------

# One row of the audit trail: what changed, from what, to what, why and by whom.
RECORD_EVENT = insert(EVENTS)

WORKER_STATUS = select(WORKERS.c.status, WORKERS.c.health).where(WORKERS.c.hostname == bindparam("host"))
WORKER_STATUS_LOCKED = WORKER_STATUS.with_for_update(key_share=True)

# A worker from `old` to `new`, compare-and-set.
MOVE_WORKER = (
    update(WORKERS)
    .where(WORKERS.c.hostname == bindparam("host"), WORKERS.c.status == bindparam("old"))
    .values(status=_NEW)
)

# A worker checks in on the database's clock (with how far its own clock is off).
WORKER_HEARTBEAT = (
    update(WORKERS)
    .where(WORKERS.c.hostname == bindparam("host"))
    .values(last_heartbeat=db_now(), clock_offset=bindparam("offset"))
)

# A worker process came up again: what it has now.
WORKER_REGISTERED = (
    update(WORKERS)
    .where(WORKERS.c.hostname == bindparam("host"))
    .values(started_at=db_now(), last_heartbeat=db_now(), health=None)
)

# Why a worker is unwell (or NULL: it is well again).
WORKER_HEALTH = update(WORKERS).where(WORKERS.c.hostname == bindparam("host")).values(health=bindparam("why"))

# The chunk a task id renders now (a chord's report names the task that crashed; fair share trades task ids).
CHUNK_BY_TASK = select(Chunk).where(Chunk.task_id == bindparam("task"))
