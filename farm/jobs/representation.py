"""The contract's JOB, built from a job's row: the API answers with it, and a webhook carries it to receivers
that the farm calls from a worker, where no web request (and no Flask `url_for`) exists — so the URLs it holds come
from the caller."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from farm.jobs import progress
from farm.models import Job


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with a Z; SQLite hands back naive datetimes, which are UTC by construction."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def jobs_json(session: Session, jobs: Sequence[Job], *, url: Callable[[str, str], str]) -> list[dict[str, Any]]:
    """JOBs, with their progress and ETA read for all of them at once; `url(job_id, what)` is the API's URL of a
    job's `asset` (the zip) or `movie`, which redirects to a presigned one made at that moment: a JOB, however long
    it is kept, never carries a credential."""
    found = progress.paces(session, jobs)
    return [job_json(job, found[job.id], url) for job in jobs]


def job_json(job: Job, pace: progress.Pace, url: Callable[[str, str], str]) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "worker_host": job.worker_host,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "finished_at": iso(job.finished_at),
        "owner": job.owner,
        "error": job.error,
        "warnings": job.scene.get("warnings", []),
        "render": {
            "frame_start": job.frame_start,
            "frame_end": job.frame_end,
            "frames_to_render": job.frames_to_render,
            "frames_rendered": job.frames_rendered,
            "latest_frame_rendered": job.latest_frame,
            "average_render_time": progress.average_ms(job),
            "eta_seconds": pace.eta_seconds,
            "progress": pace.progress,
            "chunks_rendering": pace.running,
        },
        "settings": {
            "chunk_size": job.chunk_size,
            **job.render_settings(),
            "priority": job.priority,
            "preview_movie": job.preview_movie,
        },
        "source": {
            "kind": job.source_kind,
            "main": job.main,
            "scene": job.scene.get("scene"),
            "blender": job.scene.get("blender"),
        },
        "asset": {"filename": job.asset_filename, "url": url(job.id, "asset"), "size": job.asset_size}
        if job.asset_key
        else None,
        "movie": {"filename": job.movie_filename, "url": url(job.id, "movie"), "size": job.movie_size}
        if job.movie_key
        else None,
        "preview": job.preview,
        "split": job.split,
        "storage": {"bytes": job.storage_bytes, "measured_at": iso(job.storage_measured_at)},
        "version": job.version,
    }
