"""Reading jobs as a request asks for them, for the JSON API and the pages alike: one job by id, and the jobs list
narrowed by the query string."""

from __future__ import annotations

import enum
from typing import Any

from flask import request
from sqlalchemy import Select, or_, select

from farm.errors import NotFound, ValidationError
from farm.jobs.inputs import whole_number
from farm.models import Job, JobStatus
from webapp import auth
from webapp.api.serializers import jobs_json, webhooks_json
from webapp.extensions import db


def get_job(job_id: str) -> Job:
    """The job, or 404: a deleted job is gone for users at once, though its rows wait for its cancel to settle."""
    job = db.session.get(Job, job_id) if len(job_id) <= 36 else None
    if job is None or job.deleted_at is not None:
        raise NotFound(f"job {job_id}")
    return job


def one_job(job: Job) -> dict[str, Any]:
    """JOB, read alone, with its webhook deliveries (`webhooks`; a list would cost a query per job)."""
    shape = jobs_json(db.session, [job])[0]
    return {"job": shape | {"webhooks": webhooks_json(db.session, job.id)}}


def query_int(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name, "").strip()
    if not raw:
        return default
    value = whole_number(raw)
    if value is None or not lo <= value <= hi:
        raise ValidationError(name, "out_of_range", f"{name} must be a whole number from {lo} to {hi}")
    return value


def query_statuses(choices: type[enum.StrEnum]) -> list[str]:
    """The request's `status`: comma-separated names of `choices` (any case), or none; 422 naming `status` for one
    that is not."""
    raw = request.args.get("status", "").strip().upper()
    if not raw:
        return []
    wanted = [s.strip() for s in raw.split(",")]
    unknown = [s for s in wanted if s not in choices.__members__]
    if unknown:
        raise ValidationError(
            "status", "unknown_choice", f"status must be one of {', '.join(choices)}, got {unknown[0]!r}"
        )
    return wanted


def job_search() -> Select[tuple[Job]]:
    """Jobs newest first, narrowed by the request's `status` (comma-separated), `q` (name contains, or an id) and
    `owner` (a user's name, or `me`)."""
    query = select(Job).where(Job.deleted_at.is_(None)).order_by(Job.created_at.desc(), Job.id)
    owner = request.args.get("owner", "").strip()
    if owner:
        query = query.where(Job.owner == (auth.current_actor() if owner == "me" else owner))
    wanted = query_statuses(JobStatus)
    if wanted:
        query = query.where(Job.status.in_(wanted))
    q = request.args.get("q", "").strip()
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(or_(Job.name.ilike(pattern, escape="\\"), Job.id == q))
    return query
