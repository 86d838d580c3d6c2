"""A job's end becomes webhook deliveries in the same transaction (an outbox), never a POST from inside it: the
rows exist exactly when the end committed, and only after the commit is this process's courier woken to send
them (a process that dies first leaves them to the janitor's next sweep).

Which receivers, what the body says and where its asset URL points depend on the settings of the process that
ends the job; every farm process that can end one (`farm web`, a worker's processes, `farm janitor`) installs its
settings here when it starts (`courier.install`); anything else falls back to the environment's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from farm.clock import db_now
from farm.config import Settings, load_settings
from farm.jobs.representation import jobs_json
from farm.messaging.dispatch import after_commit
from farm.models import Job, JobStatus, WebhookDelivery, WebhookStatus

EVENTS = {JobStatus.COMPLETED: "job.completed", JobStatus.FAILED: "job.failed", JobStatus.CANCELED: "job.canceled"}

_installed: dict[str, Any] = {"settings": None, "wake": None}


def install(settings: Settings, wake: Callable[[], None]) -> None:
    """This process's settings, and what to call once a transaction that wrote deliveries has committed."""
    _installed.update(settings=settings, wake=wake)


@cache
def _from_environment() -> Settings:
    return load_settings()


def settings() -> Settings:
    return _installed["settings"] or _from_environment()


def body(session: Session, job_id: str, event_name: str) -> str:
    """`{"event", "job": JOB}` as the transaction sees the job now; its asset URL on FARM_API_URL."""
    job = session.execute(select(Job).where(Job.id == job_id).execution_options(populate_existing=True)).scalar_one()
    api = settings().api_url
    shape = jobs_json(session, [job], url=lambda i, what: f"{api}/api/jobs/{i}/{what}")[0]
    return json.dumps({"event": event_name, "job": shape}, separators=(",", ":"))


def job_ended(session: Session, job_id: str, status: str) -> None:
    """Called by `states.move_job` inside the transaction that moved the job to COMPLETED, FAILED or CANCELED."""
    event_name = EVENTS.get(JobStatus(status))
    if event_name is None:
        return
    notify_url = session.scalar(select(Job.notify_url).where(Job.id == job_id))
    farm_url = settings().webhook_url
    targets = [(name, url) for name, url in (("notify_url", notify_url), ("farm", farm_url)) if url]
    if not targets:
        return
    text = body(session, job_id, event_name)
    for target, url in targets:
        session.add(
            WebhookDelivery(
                job_id=job_id,
                target=target,
                url=url,
                event=event_name,
                body=text,
                status=WebhookStatus.PENDING,
                created_at=db_now(),
                next_attempt_at=db_now(),
                attempts=[],
            )
        )
    after_commit(session, _wake)


def _wake() -> None:
    if _installed["wake"] is not None:
        _installed["wake"]()
