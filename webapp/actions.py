"""What people do to jobs and workers: submit, cancel, retry, delete, enable and disable. The JSON API and the pages
both call these, so a button and its API call can never drift apart; each commits its change and leaves the broker
messages to `after_commit`."""

from __future__ import annotations

import logging
import threading

from sqlalchemy import func, select

from farm.errors import Conflict, NotFound
from farm.jobs import deletion, states
from farm.jobs.submission import JobForm, Upload, create_job
from farm.messaging.dispatch import after_commit, assign_task_ids, send_chord, set_worker_consuming
from farm.models import Chunk, ChunkStatus, Job, JobStatus, Role, Worker, WorkerStatus
from farm.projects import Manifest, intake
from webapp import auth, services
from webapp.extensions import db

log = logging.getLogger(__name__)


def _dispatch(job: Job, task_ids: dict[int, str]) -> None:
    """Commit the chunks with their task ids, then send the chord off the request, in a thread of its own: the
    answer never waits on the broker (10,000 tasks take seconds to send). A worker never sees a chunk the database
    lacks, and no job is lost if this process dies before or while sending: every chunk was committed QUEUED with
    the time it was dispatched, and the janitor sends the task again of any chunk the broker does not hold after
    FARM_WORKER_TIMEOUT (`redispatch_lost_tasks`), then packages the job once every chunk is done."""
    celery, job_id, priority, queue = services.celery(), job.id, job.priority, job.queue

    def send() -> None:
        try:
            send_chord(celery, job_id, task_ids, priority=priority, queue=queue)
        except Exception:  # the broker is away: the janitor sends the chunks' tasks again
            log.warning("could not send the tasks of job %s; the janitor will", job_id, exc_info=True)

    # Not a daemon: a worker that shuts down gracefully finishes sending first.
    sender = threading.Thread(target=send, name=f"dispatch-{job_id}")
    after_commit(db.session(), sender.start)
    db.session.commit()


def _online_slots() -> int:
    return db.session.execute(
        select(func.count()).select_from(Worker).where(Worker.status == WorkerStatus.ONLINE)
    ).scalar_one()


def authorize_submission(form: JobForm) -> None:
    """Before any file is read: may this user submit, at this priority?"""
    auth.require(Role.ARTIST, "submitting jobs")
    auth.require_priority(form.priority)


def submit_upload(upload: Upload, form: JobForm) -> Job:
    """Create the job from a saved upload (its files go to the blob store) and dispatch it."""
    manifest = intake.manifest_from_upload(db.session, services.storage(), services.settings(), upload, form.main)
    # The files are stored for good now (by content): commit their rows before the probe, which may take a while,
    # so another upload of the same bytes meanwhile finds them instead of waiting on this transaction.
    db.session.commit()
    return submit_project(manifest, form)


def submit_project(manifest: Manifest, form: JobForm) -> Job:
    """Create the job from project files the farm holds, and dispatch it."""
    job, task_ids = create_job(
        db.session,
        services.storage(),
        services.settings(),
        manifest,
        form,
        owner=auth.current_actor(),
        slots=_online_slots(),
    )
    _dispatch(job, task_ids)
    return job


def _revoke_after_commit(job: Job) -> None:
    """Once the transaction commits, tell workers to drop the tasks of the job's QUEUED chunks (read now, before the
    cancel moves them), and only those: a revoked message is dropped where it arrives instead of costing a worker a
    claim transaction to learn its job is gone, and a canceled job may have 10,000 of them ahead of other jobs' work.
    A RENDERING chunk's task is not revoked: a revoke does not stop a running task (the renderer reads the cancel in
    the database within a second and kills Blender), so its id would only fill every worker's revoked list; nor
    are the tasks of ended chunks, which have run."""
    queued = select(Chunk.task_id).where(Chunk.job_id == job.id, Chunk.status == ChunkStatus.QUEUED)
    task_ids = [t for t in db.session.scalars(queued) if t]
    if not task_ids:
        return
    celery, job_id = services.celery(), job.id

    def revoke() -> None:
        try:
            celery.control.revoke(task_ids)
        except Exception:  # queued tasks are skipped by the database check anyway
            log.warning("could not broadcast revoke for job %s", job_id, exc_info=True)

    after_commit(db.session(), revoke)


def cancel(job: Job) -> None:
    """The job is CANCELING until no chunk renders (Blender is killed within seconds), then CANCELED."""
    auth.require_job_action(job.owner, "cancel")
    _revoke_after_commit(job)
    states.cancel_job(db.session, job.id, actor=auth.current_actor())
    db.session.commit()
    db.session.refresh(job)


def delete(job: Job) -> None:
    """Cancel the job if it is active, and delete it: gone for users at once; its files, the project files no other
    job uses and its rows now, or once its cancel has settled (`farm.jobs.deletion`)."""
    auth.require_job_action(job.owner, "delete")
    _revoke_after_commit(job)
    deletion.delete_job(db.session, services.storage(), job.id, actor=auth.current_actor(), reason="deleted by user")
    db.session.commit()


def retry(job: Job) -> None:
    """Re-render only the frames that are not done, then package again."""
    auth.require_job_action(job.owner, "retry")
    if job.status not in (JobStatus.FAILED, JobStatus.CANCELED):
        raise Conflict(f"only FAILED or CANCELED jobs can be retried; this one is {job.status}")
    chunk_ids = states.retry_job(db.session, job.id, actor=auth.current_actor())
    _dispatch(job, assign_task_ids(db.session, chunk_ids))
    db.session.refresh(job)


def set_worker_enabled(hostname: str, enabled: bool) -> None:
    """A disabled worker finishes its chunk and takes no more work; enabling brings it back."""
    auth.require(Role.ADMIN, "enabling or disabling workers")
    worker = db.session.get(Worker, hostname)
    if worker is None:
        raise NotFound(f"worker {hostname}")
    states.set_worker_enabled(db.session, hostname, enabled, actor=auth.current_actor())
    celery, queues = services.celery(), list(worker.queues)

    def tell_worker() -> None:  # the fast path; the worker's heartbeat applies the database's word within seconds
        try:
            set_worker_consuming(celery, hostname, queues, enabled)
        except Exception:
            log.warning("could not broadcast to worker %s", hostname, exc_info=True)

    after_commit(db.session(), tell_worker)
    db.session.commit()
