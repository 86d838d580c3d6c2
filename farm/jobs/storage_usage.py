"""How much storage the farm uses: each job's files, measured by listing its prefix (so thumbnails, logs and a
movie count, which no row records), and the project files it holds once for every job (the `blobs` rows).

Listing costs a request per thousand objects, so it is never done while a page or an API call waits: the janitor
keeps `jobs.storage_bytes` current, re-measuring a job only after it changed and at most once a `REMEASURE`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from farm.jobs.deletion import job_prefix
from farm.models import Job, StoredBlob
from farm.storage import Storage

REMEASURE = timedelta(seconds=60)


def _due(now: datetime) -> Any:
    return or_(
        Job.storage_measured_at.is_(None),
        (Job.storage_measured_at < Job.updated_at) & (Job.storage_measured_at < now - REMEASURE),
    )


def due(session: Session, now: datetime, limit: int = 5) -> list[str]:
    """Jobs never measured, or changed since they were measured more than REMEASURE ago; newest changes first."""
    return list(
        session.scalars(
            select(Job.id).where(Job.deleted_at.is_(None), _due(now)).order_by(Job.updated_at.desc()).limit(limit)
        )
    )


def take(session: Session, job_id: str, now: datetime) -> bool:
    """Whether this janitor measures the job: the first to mark it measured now does (compare-and-set), before
    listing. Listing a large job's prefix takes a while, and every worker's janitor has a turn meanwhile: unmarked,
    each started its own listing of the same job, and 64 of them at once stalled the storage that frames go to."""
    taken = session.execute(update(Job).where(Job.id == job_id, _due(now)).values(storage_measured_at=now))
    return taken.rowcount == 1


def measure(session: Session, storage: Storage, job_id: str, now: datetime) -> int:
    """Record the bytes under the job's prefix now. Not a change users watch, so the job's version stays."""
    size = storage.usage(job_prefix(job_id))
    session.execute(update(Job).where(Job.id == job_id).values(storage_bytes=size, storage_measured_at=now))
    return size


def farm_usage(session: Session) -> dict[str, Any]:
    """The farm's storage: jobs' files as last measured, plus the project files every job shares."""
    jobs, measured = session.execute(
        select(func.count(), func.coalesce(func.sum(Job.storage_bytes), 0)).where(Job.deleted_at.is_(None))
    ).one()
    blobs, blob_bytes = session.execute(select(func.count(), func.coalesce(func.sum(StoredBlob.size), 0))).one()
    return {
        "jobs": jobs,
        "jobs_bytes": int(measured),
        "project_files": blobs,
        "project_files_bytes": int(blob_bytes),
        "total_bytes": int(measured) + int(blob_bytes),
    }
