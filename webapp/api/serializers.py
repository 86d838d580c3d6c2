"""The contract's JSON shapes (JOB, frames, workers), built from rows plus the few aggregates they need."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import url_for
from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from farm.clock import OFFSET_WARNING_SECONDS, aware, database_now
from farm.jobs import representation
from farm.jobs.representation import iso
from farm.models import (
    Chunk,
    ChunkStatus,
    Event,
    Frame,
    FrameStatus,
    Job,
    WebhookDelivery,
    WebhookStatus,
    Worker,
    WorkerPace,
    WorkerStatus,
)
from webapp import services


def jobs_json(session: Session, jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """JOBs, their zips' and movies' URLs on this web app as the request reached it."""
    return representation.jobs_json(
        session, jobs, url=lambda job_id, what: url_for(f"api.job_{what}", job_id=job_id, _external=True)
    )


def webhooks_json(session: Session, job_id: str) -> list[dict[str, Any]]:
    """The job's webhook deliveries, each attempt with its time and status code or error. A receiver's URL is
    shown as its origin only: its path and query often hold a credential (Slack's, Discord's)."""
    rows = session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id).order_by(WebhookDelivery.id))
    return [
        {
            "id": row.id,
            "target": row.target,
            "url": _origin(row.url),
            "event": row.event,
            "status": row.status,
            "created_at": iso(row.created_at),
            "delivered_at": iso(row.delivered_at),
            "next_attempt_at": iso(row.next_attempt_at) if row.status == WebhookStatus.PENDING else None,
            "attempts": row.attempts,
        }
        for row in rows
    ]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"


FRAME_COLUMNS = (Frame.frame, Frame.status, Frame.render_time_ms, Frame.worker, Frame.device, Frame.sha256)


def frame_json(row: Row[Any], images: str) -> dict[str, Any]:
    """A frame from its FRAME_COLUMNS; `images` is the URL its image is under once DONE (`…/frames`), made once for
    a page of ten thousand rather than by `url_for` for each."""
    return {
        "frame": row.frame,
        "status": row.status,
        "render_time": row.render_time_ms,
        "worker": row.worker,
        "device": row.device,
        "sha256": row.sha256,
        "url": f"{images}/{row.frame}" if row.status == FrameStatus.DONE else None,
    }


def unclaimed_frame_json(frame: int) -> dict[str, Any]:
    """A frame without a row (its chunk was never claimed): QUEUED, nothing rendered, as `frame_json` says of one."""
    return {
        "frame": frame,
        "status": FrameStatus.QUEUED.value,
        "render_time": None,
        "worker": None,
        "device": None,
        "sha256": None,
        "url": None,
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
        host: (count, total / count if count else None)
        for host, count, total in session.execute(  # the paces summed as frames are recorded: no frame is read
            select(WorkerPace.worker, func.sum(WorkerPace.frames), func.sum(WorkerPace.render_ms_total)).group_by(
                WorkerPace.worker
            )
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
                    "owner": chunk.job.owner,
                }
                if chunk
                else None,
                "frames_rendered": count,
                "average_render_time": round(avg, 1) if avg is not None else None,
            }
        )
    return out
