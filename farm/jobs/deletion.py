"""Deleting a job, what `DELETE /api/jobs/<id>`, `farm delete` and FARM_RETENTION_DAYS all do.

A deleted job is gone for users at once (`deleted_at` is set; every read treats it as missing). Its files and rows
go once nothing of it can write any more: at once for a job that had already ended, and, for one still active, by
the janitor after its cancel has settled and its workers had time to notice — so a renderer still stopping cannot
store a frame after the job's folder was removed. What goes: everything under the job's storage prefix (frames,
thumbnails, logs, the zip, a movie), the project files no other job uses, and the job's rows. What stays: the one
event saying who deleted it, when, and from which status.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import and_, delete, exists, select
from sqlalchemy.orm import Session

from farm.errors import NotFound
from farm.jobs import states
from farm.models import Chunk, ChunkStatus, Event, Job, JobBlob, StoredBlob, TaskRecord
from farm.projects import blob_key
from farm.storage import Storage

log = logging.getLogger(__name__)
RENDERING = select(Chunk.id).where(Chunk.status == ChunkStatus.RENDERING)


def job_prefix(job_id: str) -> str:
    """Where every file the farm makes for a job lives (`jobs/<id>/frames/…`, `logs/…`, the zip)."""
    return f"jobs/{job_id}"


def delete_job(session: Session, storage: Storage, job_id: str, *, actor: str | None, reason: str) -> bool:
    """Delete a job: cancel it if it is active (through the state machine), hide it, record who deleted it, and
    remove its files and rows now if it had already ended. Returns whether they were removed now (otherwise the
    janitor does it once its cancel has settled). NotFound for a job that does not exist or is already deleted."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.deleted_at is not None:
        raise NotFound(f"job {job_id}")
    ended = job.status in states.TERMINAL_JOB and not states.chunks_running(session, job_id)
    if job.status in states.ACTIVE_JOB:
        states.cancel_job(session, job_id, actor=actor)
    states.job_deleted(session, job_id, reason=reason, actor=actor)
    if ended:
        purge(session, storage, job_id)
    return ended


def purge(session: Session, storage: Storage, job_id: str) -> list[str]:
    """Remove a deleted job's files, the blobs only it used, and its rows but the deletion's event; returns the
    blobs removed. Storage goes first: if it fails, the transaction rolls back and the janitor tries again."""
    storage.abort_uploads(job_prefix(job_id))  # a zip being written when the job was deleted
    storage.delete_prefix(job_prefix(job_id))
    shas = list(session.scalars(select(JobBlob.sha256).where(JobBlob.job_id == job_id)))
    # Lock the blobs before asking who else uses them: a submission naming one holds its row until it commits.
    session.scalars(select(StoredBlob.sha256).where(StoredBlob.sha256.in_(shas)).with_for_update()).all()
    shared = set(
        session.scalars(select(JobBlob.sha256).where(JobBlob.sha256.in_(shas), JobBlob.job_id != job_id).distinct())
    )
    orphans = sorted(set(shas) - shared)
    for sha in orphans:
        storage.delete(blob_key(sha))
    session.execute(delete(StoredBlob).where(StoredBlob.sha256.in_(orphans)))
    session.execute(delete(JobBlob).where(JobBlob.job_id == job_id))
    session.execute(delete(TaskRecord).where(TaskRecord.job_id == job_id))
    session.execute(
        delete(Event).where(Event.job_id == job_id, ~and_(Event.kind == "job", Event.new == states.DELETED))
    )
    session.execute(delete(Job).where(Job.id == job_id))  # chunks and frames go with it (ON DELETE CASCADE)
    log.info("job %s purged: its files, %d project files only it used, and its rows", job_id, len(orphans))
    return orphans


def ready_to_purge(session: Session, settled_before: datetime, limit: int = 50) -> list[str]:
    """Deleted jobs whose cancel has settled, no chunk renders, and nothing changed since `settled_before`."""
    return list(
        session.scalars(
            select(Job.id)
            .where(
                Job.deleted_at.is_not(None),
                Job.status.in_(states.TERMINAL_JOB),
                Job.updated_at < settled_before,
                ~exists(RENDERING.where(Chunk.job_id == Job.id)),
            )
            .limit(limit)
        )
    )


def expired(session: Session, finished_before: datetime, limit: int = 50) -> list[str]:
    """Ended jobs that finished before `finished_before` and are not deleted yet: FARM_RETENTION_DAYS is up."""
    return list(
        session.scalars(
            select(Job.id)
            .where(
                Job.deleted_at.is_(None),
                Job.status.in_(states.TERMINAL_JOB),
                Job.finished_at < finished_before,
            )
            .order_by(Job.finished_at)
            .limit(limit)
        )
    )
