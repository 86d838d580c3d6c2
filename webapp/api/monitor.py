"""The monitor's other nouns, next to workers: broker queues (read from the broker itself) and task history (read
from the rows workers record from Celery's signals, so it outlives the web app and needs no Flower)."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from farm.errors import ValidationError
from farm.jobs.storage_usage import farm_usage
from farm.messaging import broker
from farm.models import Job, TaskRecord, Worker
from webapp import services
from webapp.api import bp
from webapp.api.serializers import iso
from webapp.extensions import db
from webapp.queries import query_int

TASK_STATES = ("RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REJECTED", "REVOKED", "IGNORED")


def monitored_queues(session: Session) -> list[str]:
    """The farm's shared queue, every queue a worker consumes or a job was sent to, and each worker's own."""
    shared = services.settings().queue
    workers = session.execute(select(Worker.hostname, Worker.queues).order_by(Worker.hostname)).all()
    names = [shared, *session.scalars(select(Job.queue).distinct().order_by(Job.queue))]
    names += [queue for _, queues in workers for queue in queues or []]
    names += broker.queue_names(shared, [hostname for hostname, _ in workers])[1:]  # each worker's own queue
    return list(dict.fromkeys(names))


def queues_json(session: Session) -> list[dict[str, Any]]:
    lengths = broker.queue_lengths(services.settings(), monitored_queues(session))
    return [{"name": name, **counts} for name, counts in lengths.items()]


def task_json(row: TaskRecord) -> dict[str, Any]:
    return {
        "id": row.task_id,
        "name": row.name,
        "state": row.state,
        "worker": row.worker,
        "queue": row.queue,
        "job_id": row.job_id,
        "chunk_id": row.chunk_id,
        "args": row.args,
        "retries": row.retries,
        "received_at": iso(row.received_at),
        "started_at": iso(row.started_at),
        "finished_at": iso(row.finished_at),
        "runtime": row.runtime_ms,
        "result": row.result,
    }


def tasks_json(
    session: Session, *, states: list[str], worker: str | None, job_id: str | None, limit: int, offset: int
) -> dict[str, Any]:
    query = select(TaskRecord)
    if states:
        query = query.where(TaskRecord.state.in_(states))
    if worker:
        query = query.where(TaskRecord.worker == worker)
    if job_id:
        query = query.where(TaskRecord.job_id == job_id)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    rows = session.scalars(query.order_by(TaskRecord.updated_at.desc()).limit(limit).offset(offset))
    return {"tasks": [task_json(r) for r in rows], "total": total, "limit": limit, "offset": offset}


def task_filters() -> dict[str, Any]:
    """The query of `GET /api/tasks` (and the workers page): state (comma-separated), worker, job, limit, offset."""
    raw = request.args.get("state", "").strip().upper()
    states = [s.strip() for s in raw.split(",")] if raw else []
    unknown = [s for s in states if s not in TASK_STATES]  # an empty item too: `state=,` is a typo, not "all"
    if unknown:
        raise ValidationError("state", "unknown_choice", f"state must be one of {', '.join(TASK_STATES)}")
    return {
        "states": states,
        "worker": request.args.get("worker", "").strip() or None,
        "job_id": request.args.get("job", "").strip() or None,
        "limit": query_int("limit", 50, 1, 500),
        "offset": query_int("offset", 0, 0, 10**9),
    }


@bp.get("/queues")
def list_queues() -> Response:
    """`{"queues": [{"name", "waiting", "unacked"}, …]}`, counted in the broker (Redis lists, or the filesystem
    broker's folder) — messages no worker has taken yet, and (Redis) ones taken but not yet acknowledged."""
    return jsonify({"queues": queues_json(db.session)})


@bp.get("/tasks")
def list_tasks() -> Response:
    """Recent tasks, newest change first: `{"tasks": [...], "total", "limit", "offset"}`. Query: `state`
    (RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REJECTED, REVOKED; comma-separated), `worker`, `job`, `limit`
    (1-500), `offset`."""
    return jsonify(tasks_json(db.session, **task_filters()))


@bp.get("/storage")
def storage_used() -> Response:
    """The farm's storage used: `{"total_bytes", "jobs_bytes", "jobs", "project_files_bytes", "project_files"}`; jobs'
    files as the janitor last measured them (each JOB's `storage`), project files stored once for every job."""
    return jsonify(farm_usage(db.session))
