"""Fair share between users: a free worker renders a chunk of the user with the least work running, not simply the
chunk whose message the broker handed it.

Each chunk still has one render task in the broker (so the chord, the janitor's lost-task check, retries, cancels
and priorities work as before), but a task in the shared queue is only a token: it renders whichever chunk holds its
task id in the database. When a token is claimed, the chunk it holds may trade task ids with the first waiting chunk
of a user who deserves the worker more (fewer chunks rendering; on a tie, the one served least recently). The traded
chunk keeps the other token, still in the broker, so every queued chunk still has exactly one message. Trades stay
within one queue and one priority, so the broker's priority order is the order of the work too; and only chunks never
tried yet are traded for, so a retry's placement on a chosen worker's own queue is left alone.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from farm.models import Chunk, ChunkStatus, Job, JobStatus

RENDERABLE = (JobStatus.QUEUED, JobStatus.RENDERING)
job_owner = func.coalesce(Job.owner, "")  # jobs submitted before owners were recorded share one anonymous owner


def holder(session: Session, task_id: str) -> tuple[str, int] | None:
    """The (job id, chunk id) whose render task is `task_id` now: the message's own arguments may name the chunk it
    was sent for, which has since traded it away."""
    row = session.execute(
        select(Chunk.job_id, Chunk.id)
        .where(Chunk.task_id == task_id)
        .order_by((Chunk.status == ChunkStatus.QUEUED).desc())
        .limit(1)
    ).first()
    return (row.job_id, row.id) if row else None


def _waiting(queue: str, priority: int) -> list[Any]:
    """Chunks that may be traded for: never tried, waiting, of a renderable job of this queue and priority."""
    return [
        Chunk.status == ChunkStatus.QUEUED,
        Chunk.attempts == 0,
        Job.status.in_(RENDERABLE),
        Job.queue == queue,
        Job.priority == priority,
    ]


def _holding(session: Session, task_id: str) -> Any:
    """The waiting chunk that holds `task_id`, locked, with its job's owner, queue and priority."""
    return session.execute(
        select(Chunk.id, job_owner.label("owner"), Job.queue, Job.priority)
        .join(Job, Job.id == Chunk.job_id)
        .where(Chunk.task_id == task_id, Chunk.status == ChunkStatus.QUEUED, Job.status.in_(RENDERABLE))
        .with_for_update(of=Chunk)
    ).first()


def _others_waiting(session: Session, queue: str, priority: int, owner: str) -> bool:
    """Whether another user has a chunk to trade for; most of the time nobody has, and then the count of every
    user's running chunks, a scan of the active jobs' chunks on each claim, is not needed."""
    others = select(Chunk.id).join(Job, Job.id == Chunk.job_id).where(*_waiting(queue, priority), job_owner != owner)
    return session.scalar(others.limit(1)) is not None


def fairest(session: Session, chunk_id: int, task_id: str, queue: str) -> int:
    """The chunk the task `task_id`, taken from the shared `queue`, should render: the waiting chunk that holds the
    task, or a waiting chunk of a user who deserves the worker more, which then holds the task instead (trading ids,
    in the caller's transaction, which claims the chunk returned); `chunk_id` when no waiting chunk holds it."""
    # A second look: a trade that committed while this waited for the lock may have moved the task to another chunk.
    mine = _holding(session, task_id) or _holding(session, task_id)
    if mine is None:
        return chunk_id
    if mine.queue != queue:  # sent to one worker's own queue (a retry, a hand-over): rendered as it was sent
        return int(mine.id)
    if not _others_waiting(session, queue, mine.priority, mine.owner):  # one user's work: nothing to weigh
        return int(mine.id)
    waiting_owners = select(job_owner).join(Chunk, Chunk.job_id == Job.id).where(*_waiting(queue, mine.priority))
    best = session.scalar(
        select(job_owner)
        .join(Chunk, Chunk.job_id == Job.id)
        .where(Job.status.in_(RENDERABLE), or_(job_owner.in_(waiting_owners), job_owner == mine.owner))
        .group_by(job_owner)
        .order_by(
            func.count(Chunk.id).filter(Chunk.status == ChunkStatus.RENDERING),
            func.max(Chunk.started_at).nulls_first(),
            job_owner != mine.owner,  # on a full tie the task renders what it was sent for
        )
        .limit(1)
    )
    if best is None or best == mine.owner:
        return int(mine.id)
    other = session.execute(
        select(Chunk.id, Chunk.task_id)
        .join(Job, Job.id == Chunk.job_id)
        .where(*_waiting(queue, mine.priority), job_owner == best)
        .order_by(Job.created_at, Chunk.index)
        .limit(1)
        .with_for_update(of=Chunk, skip_locked=True)  # another worker is trading for it: keep ours
    ).first()
    if other is None:
        return int(mine.id)
    session.execute(update(Chunk).where(Chunk.id == other.id).values(task_id=task_id))
    session.execute(update(Chunk).where(Chunk.id == mine.id).values(task_id=other.task_id))
    return int(other.id)
