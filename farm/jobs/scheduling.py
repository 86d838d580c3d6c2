"""Who should render a chunk next: retries go to workers that have not failed it, and a worker that failed K chunks
of a job is blocklisted for that job (Flamenco's blocklist) while any other worker can take it.

Failures are read from the events table (chunk → FAILED, by worker), so the policy needs no state of its own.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, ScalarSelect, func, select
from sqlalchemy.orm import Session

from farm.clock import database_now
from farm.config import Settings
from farm.models import Chunk, ChunkStatus, Event, JobStatus, Worker, WorkerStatus


@dataclass(frozen=True)
class Failures:
    by_worker: Counter[str]  # chunks of the job each worker failed
    of_chunk: set[str]  # workers that failed this chunk

    def blocklisted(self, worker: str, threshold: int) -> bool:
        return self.by_worker[worker] >= threshold


def since_requeued(job_id: Any) -> ColumnElement[bool]:
    """Events of the job since it was last (re)queued: a retry by the user wipes the slate clean."""
    requeued = (
        select(func.coalesce(func.max(Event.id), 0))
        .where(Event.job_id == job_id, Event.kind == "job", Event.new == JobStatus.QUEUED)
        .correlate_except(Event)  # `job_id` may be a column of an enclosing query; the events are this query's own
        .scalar_subquery()
    )
    return Event.id > requeued


def _chunk_failures(job_id: Any) -> tuple[Any, ...]:
    """Chunk failures of the job since it was last (re)queued."""
    return (Event.job_id == job_id, Event.kind == "chunk", Event.new == ChunkStatus.FAILED, since_requeued(job_id))


def failures(session: Session, job_id: str, chunk_index: int | None = None) -> Failures:
    rows = session.execute(select(Event.subject, Event.actor).where(*_chunk_failures(job_id))).all()
    subject = f"{job_id}/{chunk_index}"
    return Failures(
        by_worker=Counter(actor for _, actor in rows if actor),
        of_chunk={actor for subj, actor in rows if subj == subject and actor},
    )


def failed_by(job_id: Any, worker: Any) -> ScalarSelect[int]:
    """How many chunks of the job `worker` failed, as a subquery (of ids, bound parameters or an enclosing query's
    columns): asked at every claim, so two index probes."""
    return (
        select(func.count())
        .where(*_chunk_failures(job_id), Event.actor == worker)
        .correlate_except(Event)
        .scalar_subquery()
    )


def live_workers(session: Session, queue: str, settings: Settings, now: datetime | None = None) -> dict[str, int]:
    """ONLINE workers that consume `queue` and heartbeat in time, with how many chunks each renders now."""
    fresh = (now or database_now(session)) - timedelta(seconds=settings.worker_timeout_seconds)
    busy = dict(
        session.execute(
            select(Chunk.worker, func.count()).where(Chunk.status == ChunkStatus.RENDERING).group_by(Chunk.worker)
        ).all()
    )
    workers = session.scalars(
        select(Worker).where(Worker.status == WorkerStatus.ONLINE, Worker.last_heartbeat >= fresh)
    ).all()
    return {w.hostname: busy.get(w.hostname, 0) for w in workers if queue in (w.queues or [])}


@dataclass(frozen=True)
class Placement:
    """Where to send a chunk: a named worker's own queue, the shared queue (worker None), or nowhere (reason)."""

    worker: str | None = None
    refused: str | None = None


def place_chunk(
    session: Session,
    job_id: str,
    chunk_index: int,
    *,
    queue: str,
    settings: Settings,
    asking: str,
    more_memory: bool = False,
) -> Placement:
    """Pick a worker for a chunk that `asking` failed, or that `asking` (blocklisted for the job) must pass on.
    Prefer a live worker that has not failed this chunk (with `more_memory`, after Blender ran out of memory: the
    one with the most memory, if it has more than `asking`); else let any allowed worker take it from the shared
    queue; refuse only when every live worker is blocklisted for the job."""
    record = failures(session, job_id, chunk_index)
    threshold = settings.blocklist_failures
    live = live_workers(session, queue, settings)
    allowed = {w: n for w, n in live.items() if not record.blocklisted(w, threshold)}
    others = {w: n for w, n in allowed.items() if w != asking}
    fresh = {w: n for w, n in others.items() if w not in record.of_chunk}
    if fresh and more_memory:
        memory = dict(
            session.execute(
                select(Worker.hostname, Worker.memory_bytes).where(Worker.hostname.in_([*fresh, asking]))
            ).all()
        )
        bigger = [w for w in fresh if (memory.get(w) or 0) > (memory.get(asking) or 0)]
        if bigger:
            return Placement(worker=max(bigger, key=lambda w: (memory[w], -fresh[w])))
    if fresh:
        return Placement(worker=min(fresh, key=lambda w: (fresh[w], w)))
    if record.blocklisted(asking, threshold):
        if others:
            return Placement(worker=min(others, key=lambda w: (others[w], w)))
        if live:
            return Placement(refused=f"every live worker failed {threshold} chunks of this job")
    return Placement()
