"""The contract's JSON shapes (JOB, frames, workers), built from rows plus the few aggregates they need."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import url_for
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from farm.clock import OFFSET_WARNING_SECONDS, aware, database_now
from farm.jobs import progress
from farm.models import Chunk, ChunkStatus, Event, Frame, FrameStatus, Job, Worker, WorkerStatus
from webapp import services


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with a Z; SQLite hands back naive datetimes, which are UTC by construction."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def jobs_json(session: Session, jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """JOBs, with their progress and ETA read for all of them at once."""
    found = progress.paces(session, jobs)
    return [job_json(job, found[job.id]) for job in jobs]


def job_json(job: Job, pace: progress.Pace) -> dict[str, Any]:
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
            "engine": job.engine,
            "samples": job.samples,
            "resolution_x": job.resolution_x,
            "resolution_y": job.resolution_y,
            "resolution_percentage": job.resolution_percentage,
            "output_format": job.output_format,
            "device": job.device,
            "priority": job.priority,
            "preview_movie": job.preview_movie,
        },
        "source": {
            "kind": job.source_kind,
            "main": job.main,
            "scene": job.scene.get("scene"),
            "blender": job.scene.get("blender"),
        },
        # the API's own URL, which redirects to a presigned one made at that moment: a JOB (listed, cached by a
        # script, kept in an open page) never carries a credential, nor one that expires while it is kept
        "asset": {
            "filename": job.asset_filename,
            "url": url_for("api.job_asset", job_id=job.id, _external=True),
            "size": job.asset_size,
        }
        if job.asset_key
        else None,
        "movie": {
            "filename": job.movie_filename,
            "url": url_for("api.job_movie", job_id=job.id, _external=True),
            "size": job.movie_size,
        }
        if job.movie_key
        else None,
        "preview": job.preview,
        "version": job.version,
    }


def frame_json(frame: Frame) -> dict[str, Any]:
    done = frame.status == FrameStatus.DONE
    return {
        "frame": frame.frame,
        "status": frame.status,
        "render_time": frame.render_time_ms,
        "worker": frame.worker,
        "device": frame.device,
        "sha256": frame.sha256,
        "url": url_for("api.job_frame", job_id=frame.job_id, frame=frame.frame, _external=True) if done else None,
    }


def chunk_json(chunk: Chunk) -> dict[str, Any]:
    return {
        "index": chunk.index,
        "frame_start": chunk.frame_start,
        "frame_end": chunk.frame_end,
        "status": chunk.status,
        "attempts": chunk.attempts,
        "worker": chunk.worker,
        "started_at": iso(chunk.started_at),
        "finished_at": iso(chunk.finished_at),
        "error": chunk.error,
        "progress": chunk.progress,
        "log_url": url_for("api.chunk_log", job_id=chunk.job_id, index=chunk.index, _external=True)
        if chunk.log_key
        else None,
    }


def event_json(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": iso(event.created_at),
        "kind": event.kind,
        "subject": event.subject,
        "from": event.old,
        "to": event.new,
        "reason": event.reason,
        "actor": event.actor,
    }


def worker_status(worker: Worker, now: datetime, timeout_s: float) -> str:
    """A worker whose heartbeat is older than the timeout shows as OFFLINE even before the janitor says so."""
    if worker.status == WorkerStatus.ONLINE and now - aware(worker.last_heartbeat) > timedelta(seconds=timeout_s):
        return WorkerStatus.OFFLINE
    return worker.status


def workers_json(session: Session, hostname: str | None = None) -> list[dict[str, Any]]:
    """All workers (or the one named), with their pace from the frames they rendered."""
    stats = {
        host: (count, avg)
        for host, count, avg in session.execute(
            select(Frame.worker, func.count(), func.avg(Frame.render_time_ms))
            .where(Frame.status == FrameStatus.DONE, Frame.worker.is_not(None))
            .group_by(Frame.worker)
        )
    }
    current: dict[str, Chunk] = {}  # what each worker renders now, read from the chunks (the latest it claimed)
    for chunk in session.scalars(select(Chunk).where(Chunk.status == ChunkStatus.RENDERING).order_by(Chunk.started_at)):
        if chunk.worker:
            current[chunk.worker] = chunk
    now = database_now(session)  # the clock that wrote the heartbeats
    timeout = services.settings().worker_timeout_seconds
    out = []
    query = select(Worker).order_by(Worker.hostname)
    if hostname is not None:
        query = query.where(Worker.hostname == hostname)
    for worker in session.scalars(query):
        count, avg = stats.get(worker.hostname, (0, None))
        status = worker_status(worker, now, timeout)
        chunk = current.get(worker.hostname) if status != WorkerStatus.OFFLINE else None  # its chunk awaits the janitor
        out.append(
            {
                "hostname": worker.hostname,
                "status": status,
                "devices": worker.devices,
                "queues": worker.queues,
                "last_heartbeat": iso(worker.last_heartbeat),
                "clock_offset": None if worker.clock_offset is None else round(worker.clock_offset, 3),
                "clock_warning": worker.clock_offset is not None and abs(worker.clock_offset) > OFFSET_WARNING_SECONDS,
                "health": worker.health,
                "memory_bytes": worker.memory_bytes,
                "started_at": iso(worker.started_at),
                "current": {
                    "job_id": chunk.job_id,
                    "chunk": chunk.index,
                    "frame_start": chunk.frame_start,
                    "frame_end": chunk.frame_end,
                }
                if chunk
                else None,
                "frames_rendered": count,
                "average_render_time": round(avg, 1) if avg is not None else None,
            }
        )
    return out
