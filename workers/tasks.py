"""The Celery tasks: thin wrappers that pass ids to the code that does the work, like views in a web app.

Tasks re-load every row they need (ids in, never objects), are safe to run twice (the database decides who
renders a chunk and whether a job is packaged), and record failures through `farm.states`.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import BotoCoreError
from celery import Task, shared_task

from farm import retrying, states
from farm.dispatch import CHORD_FAILED, PACKAGE_JOB, RENDER_CHUNK
from workers import packaging, rendering
from workers.context import get_context

log = logging.getLogger(__name__)
TRANSIENT = (*retrying.TRANSIENT, BotoCoreError)  # BotoCoreError: a storage stream cut mid-read


@shared_task(name=RENDER_CHUNK, bind=True, acks_late=True, max_retries=None)
def render_chunk(self: Task, job_id: str, chunk_id: int) -> str:
    return rendering.render_chunk(
        get_context(), self.app, job_id, chunk_id, worker=self.request.hostname, task_id=self.request.id
    )


@shared_task(
    name=PACKAGE_JOB,
    bind=True,
    acks_late=True,
    autoretry_for=TRANSIENT,
    retry_backoff=2,
    retry_backoff_max=60,
    max_retries=20,
)
def package_job(self: Task, job_id: str, resume: bool = False) -> str:
    ctx = get_context()
    try:
        return packaging.package_job(
            ctx, job_id, actor=self.request.hostname, resume=resume or self.request.retries > 0
        )
    except packaging.FrameCorrupt as exc:
        with ctx.db.session() as session:
            states.fail_job(session, job_id, str(exc), actor=self.request.hostname)
        return "failed"


@shared_task(name=CHORD_FAILED)
def chord_failed(request: Any, exc: BaseException, traceback: Any, job_id: str) -> None:
    """The chord's error callback: a render task raised instead of recording its outcome (or was revoked)."""
    with get_context().db.session() as session:
        if states.fail_job_for_chord(
            session, job_id, f"a render task crashed: {exc!r}", actor=getattr(request, "hostname", None)
        ):
            log.error("chord of job %s failed: %r", job_id, exc)
