"""The contract's JOB, built from a job's row: the API answers with it, and a webhook carries it to receivers
that the farm calls from a worker, where no web request (and no Flask `url_for`) exists — so the one URL it holds
comes from the caller."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from farm.jobs import planning
from farm.models import Chunk, ChunkStatus, Job


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with a Z; SQLite hands back naive datetimes, which are UTC by construction."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def running_chunks(session: Session, job_ids: Sequence[str]) -> dict[str, int]:
    if not job_ids:
        return {}
    rows = session.execute(
        select(Chunk.job_id, func.count())
        .where(Chunk.job_id.in_(job_ids), Chunk.status == ChunkStatus.RENDERING)
        .group_by(Chunk.job_id)
    )
    return {job_id: count for job_id, count in rows}


def job_json(job: Job, running: int, asset_url: Callable[[str], str]) -> dict[str, Any]:
    """JOB; `asset_url` makes the URL of a job's zip from its id (the API's own `/asset` URL, which redirects to a
    presigned one made at that moment: a JOB, however long it is kept, never carries a credential)."""
    average = round(job.render_ms_total / job.frames_rendered, 1) if job.frames_rendered else None
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
            "average_render_time": average,
            "eta_seconds": planning.eta_seconds(job.frames_to_render - job.frames_rendered, average, running),
            "chunks_rendering": running,
        },
        "settings": {
            "chunk_size": job.chunk_size,
            "engine": job.engine,
            "samples": job.samples,
            "resolution_x": job.resolution_x,
            "resolution_y": job.resolution_y,
            "resolution_percentage": job.resolution_percentage,
            "output_format": job.output_format,
            "device": job.device,
            "priority": job.priority,
        },
        "source": {
            "kind": job.source_kind,
            "main": job.main,
            "scene": job.scene.get("scene"),
            "blender": job.scene.get("blender"),
        },
        "asset": {"filename": job.asset_filename, "url": asset_url(job.id), "size": job.asset_size}
        if job.asset_key
        else None,
        "storage": {"bytes": job.storage_bytes, "measured_at": iso(job.storage_measured_at)},
        "version": job.version,
    }
