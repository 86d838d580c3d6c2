"""The Celery tasks: thin wrappers that pass ids to the code that does the work, like views in a web app.

Tasks re-load every row they need (ids in, never objects), are safe to run twice (the database decides who
renders a chunk and whether a job is packaged), and record failures through `farm.jobs.states`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Reject, SoftTimeLimitExceeded

from farm import metrics, retrying
from farm.jobs import states
from farm.messaging.dispatch import CHORD_FAILED, PACKAGE_JOB, RENDER_CHUNK
from farm.models import Job
from farm.storage.s3 import STREAM_ERRORS
from workers import packaging, rendering
from workers.context import WorkerContext, get_context
from workers.disk import DISK_FULL, make_room
from workers.frame_fetch import Unpackable

log = logging.getLogger(__name__)
TRANSIENT = (*retrying.TRANSIENT, *STREAM_ERRORS)


@shared_task(name=RENDER_CHUNK, bind=True, acks_late=True, max_retries=None)
def render_chunk(self: Task, job_id: str, chunk_id: int) -> str:
    return rendering.render_chunk(
        get_context(),
        self.app,
        job_id,
        chunk_id,
        worker=self.request.hostname,
        task_id=self.request.id,
        queue=(self.request.delivery_info or {}).get("routing_key"),
    )


@shared_task(
    name=PACKAGE_JOB,
    bind=True,
    acks_late=True,
    autoretry_for=TRANSIENT,
    retry_backoff=2,
    retry_backoff_max=60,
    max_retries=20,
)  # time limits: FARM_PACKAGING_SOFT_SECONDS / _HARD_SECONDS, set in farm.celery_app
def package_job(self: Task, job_id: str, resume: bool = False) -> str:
    """One packaging attempt. An outage is waited out within it (Celery retries it); anything else ends it, with
    its reason recorded, and the janitor starts the next one until FARM_PACKAGING_ATTEMPTS are spent; a frame that
    can never be zipped fails the job at once."""
    ctx = get_context()
    actor = self.request.hostname
    if _leave_to_another(ctx, job_id, actor):
        time.sleep(1)  # not at once: the message comes back to the queue, where a worker with room takes it
        raise Reject(f"{DISK_FULL}: packaging left to another worker", requeue=True)
    started = time.monotonic()
    try:
        outcome = packaging.package_job(ctx, job_id, actor=actor, resume=resume, retried=self.request.retries > 0)
    except Exception as exc:
        transient = isinstance(exc, TRANSIENT) and self.request.retries < self.max_retries
        metrics.PACKAGING_SECONDS.labels(outcome="outage" if transient else "failed").observe(
            time.monotonic() - started
        )
        if transient:
            raise  # retried by Celery after a backoff, as the same attempt
        with ctx.db.session() as session:
            if isinstance(exc, Unpackable):
                states.fail_job(session, job_id, str(exc), actor=actor)
                return "failed"
            states.packaging_failed(
                session, job_id, _why(self, exc), attempts=ctx.settings.packaging_attempts, actor=actor
            )
        raise
    metrics.PACKAGING_SECONDS.labels(outcome=outcome).observe(time.monotonic() - started)
    return outcome


def _leave_to_another(ctx: WorkerContext, job_id: str, worker: str) -> bool:
    """Packaging downloads the frames other machines rendered: a worker whose disk stays under its floor leaves it
    to a live worker with a healthy disk, when there is one (else it tries, and a full disk fails the attempt)."""
    floor = ctx.settings.min_free_bytes
    if make_room(ctx.settings.cache_dir, ctx.frames, floor) >= floor:
        return False
    with ctx.db.session() as session:
        job = session.get(Job, job_id)
        return job is not None and bool(rendering.healthy_others(session, ctx, job.queue, worker))


def _why(task: Task, exc: Exception) -> str:
    if isinstance(exc, SoftTimeLimitExceeded):
        return f"it ran past its soft time limit of {task.soft_time_limit:g} s (FARM_PACKAGING_SOFT_SECONDS)"
    return f"{type(exc).__name__}: {exc}"[:1000]


@shared_task(name=CHORD_FAILED)
def chord_failed(request: Any, exc: BaseException, traceback: Any, job_id: str) -> None:
    """The chord's error callback: a render task raised instead of recording its outcome (or was revoked)."""
    with get_context().db.session() as session:
        if states.fail_job_for_chord(
            session, job_id, f"a render task crashed: {exc!r}", actor=getattr(request, "hostname", None)
        ):
            log.error("chord of job %s failed: %r", job_id, exc)
