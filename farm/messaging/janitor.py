"""The janitor: the database is the truth, the broker may lose work, processes may die — so every few seconds it
looks for work that fell between the cracks and puts it back on track.

- workers that stopped heartbeating become OFFLINE;
- RENDERING chunks whose renderer went silent are re-queued (or failed after the retry limit, or canceled when
  their job is being canceled);
- QUEUED chunks whose task the broker no longer holds are dispatched again;
- jobs whose chunks are all done but were never packaged (the chord callback was lost) are packaged, and packaging
  that stalled (its packager died) is resumed;
- CANCELING jobs with nothing left running become CANCELED;
- project files (blobs) no job has used for FARM_BLOB_TTL_DAYS, and no active job needs, are deleted;
- preview jobs (`preview=1`) that ended longer than FARM_PREVIEW_TTL_HOURS ago are deleted, files and rows.

Every action is a compare-and-set through `farm.jobs.states`, and candidate rows are locked with SKIP LOCKED on
Postgres, so any number of janitors can run at once without doing anything twice.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from celery import Celery
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from farm.clock import database_now
from farm.config import Settings
from farm.db import Database
from farm.jobs import states
from farm.messaging import broker
from farm.messaging.dispatch import new_task_id, retire_tasks, send_packaging, send_render
from farm.models import Chunk, ChunkStatus, Event, Frame, Job, JobBlob, JobStatus, Worker, WorkerStatus
from farm.projects import blob_store
from farm.storage import Storage, open_storage

log = logging.getLogger(__name__)
ACTIVE = (JobStatus.QUEUED, JobStatus.RENDERING)
STOPPING = (JobStatus.CANCELING, JobStatus.CANCELED, JobStatus.FAILED)


@dataclass(frozen=True)
class Send:
    """A render task to send once the transaction that recorded its id has committed, replacing `old_task_id`."""

    job_id: str
    chunk_id: int
    task_id: str
    queue: str
    priority: int
    old_task_id: str | None


@dataclass
class Sweep:
    """What one pass did, for logs and tests."""

    workers_offline: list[str] = field(default_factory=list)
    chunks_requeued: list[int] = field(default_factory=list)
    chunks_redispatched: list[int] = field(default_factory=list)
    chunks_abandoned: list[int] = field(default_factory=list)
    jobs_failed: list[str] = field(default_factory=list)
    jobs_packaged: list[str] = field(default_factory=list)
    jobs_settled: list[str] = field(default_factory=list)
    blobs_expired: list[str] = field(default_factory=list)
    previews_expired: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(vars(self).values())


class Janitor:
    def __init__(self, db: Database, celery: Celery, settings: Settings, name: str) -> None:
        self.db, self.celery, self.settings, self.name = db, celery, settings, name
        self.timeout = timedelta(seconds=settings.worker_timeout_seconds)

    def _locked(self, session: Session, query):  # type: ignore[no-untyped-def]
        return session.scalars(query.with_for_update(skip_locked=True)).all()

    def sweep(self) -> Sweep:
        done = Sweep()
        try:  # every judgement of staleness by the database's clock, which wrote every heartbeat
            with self.db.session() as session:
                now = database_now(session)
        except Exception:
            log.exception("janitor %s cannot read the database's clock", self.name)
            return done
        for step in (
            self.mark_silent_workers,
            self.recover_silent_chunks,
            self.redispatch_lost_tasks,
            self.package_finished_jobs,
            self.resume_stalled_packaging,
            self.settle_cancels,
            self.expire_blobs,
            self.expire_previews,
        ):
            try:
                step(now, done)
            except Exception:  # one failing step (say, the broker is down) must not stop the others
                log.exception("janitor step %s failed", step.__name__)
        if done:
            log.info("janitor %s: %s", self.name, {k: v for k, v in vars(done).items() if v})
        return done

    def expire_blobs(self, now: datetime, done: Sweep) -> None:
        with self.db.session() as session:
            done.blobs_expired.extend(blob_store.expire(session, self.storage, self.settings.blob_ttl_days))

    def expire_previews(self, now: datetime, done: Sweep) -> None:
        """A preview is a quick look, not a deliverable: once it has ended for FARM_PREVIEW_TTL_HOURS, its frames,
        zip, movie and logs go from storage, then its rows (the files first: a janitor that dies between the two
        finds the job again and deletes what is left)."""
        cutoff = now - timedelta(hours=self.settings.preview_ttl_hours)
        with self.db.session() as session:
            for job in self._locked(
                session,
                select(Job).where(Job.preview, Job.status.in_(states.TERMINAL_JOB), Job.finished_at < cutoff),
            ):
                self.storage.delete_prefix(f"jobs/{job.id}/")
                _forget_job(session, job.id)
                done.previews_expired.append(job.id)

    @functools.cached_property
    def storage(self) -> Storage:
        return open_storage(self.settings)

    def mark_silent_workers(self, now: datetime, done: Sweep) -> None:
        with self.db.session() as session:
            for worker in self._locked(
                session,
                select(Worker).where(Worker.status == WorkerStatus.ONLINE, Worker.last_heartbeat < now - self.timeout),
            ):
                if states.worker_offline(session, worker.hostname, f"no heartbeat since {worker.last_heartbeat}"):
                    done.workers_offline.append(worker.hostname)

    def recover_silent_chunks(self, now: datetime, done: Sweep) -> None:
        sends: list[Send] = []
        with self.db.session() as session:
            silent = self._locked(
                session,
                select(Chunk).where(Chunk.status == ChunkStatus.RENDERING, Chunk.heartbeat_at < now - self.timeout),
            )
            for chunk in silent:
                job = session.get(Job, chunk.job_id)
                assert job is not None
                reason = f"its renderer {chunk.worker} stopped heartbeating"
                if job.status in STOPPING:
                    states.finish_chunk(
                        session, chunk, ChunkStatus.CANCELED, worker=chunk.worker or self.name, reason=reason
                    )
                    done.chunks_abandoned.append(chunk.id)
                elif chunk.attempts >= self.settings.chunk_attempts:
                    states.finish_chunk(
                        session, chunk, ChunkStatus.FAILED, worker=chunk.worker or self.name, reason=reason
                    )
                    if states.fail_job(
                        session,
                        job.id,
                        f"chunk {chunk.index} (frames {chunk.frame_start}-"
                        f"{chunk.frame_end}) failed {chunk.attempts} times; last: {reason}",
                        actor=self.name,
                    ):
                        done.jobs_failed.append(job.id)
                else:
                    task_id, old_task_id = new_task_id(), chunk.task_id
                    if states.requeue_chunk(session, chunk, task_id=task_id, reason=reason, actor=self.name):
                        sends.append(Send(job.id, chunk.id, task_id, job.queue, job.priority, old_task_id))
                        done.chunks_requeued.append(chunk.id)
        self._send(sends)

    def redispatch_lost_tasks(self, now: datetime, done: Sweep) -> None:
        with self.db.session() as session:
            waiting = session.execute(
                select(Chunk.id, Chunk.task_id, Job.id, Job.queue, Job.priority)
                .join(Job, Job.id == Chunk.job_id)
                .where(
                    Job.status.in_(ACTIVE),
                    Chunk.status == ChunkStatus.QUEUED,
                    Chunk.dispatched_at < now - self.timeout,
                )
            ).all()
            if not waiting:
                return
            live = session.scalars(select(Worker.hostname).where(Worker.status != WorkerStatus.OFFLINE)).all()
        held: dict[str, set[str]] = {}
        for queue in {row.queue for row in waiting}:
            held[queue] = broker.pending_task_ids(
                self.settings, broker.queue_names(queue, live), held_within=self.timeout.total_seconds()
            )
        sends: list[Send] = []
        with self.db.session() as session:
            for chunk_id, old_task_id, job_id, queue, priority in waiting:
                if old_task_id in held[queue]:
                    continue
                task_id = new_task_id()
                if states.replace_task(session, chunk_id, old_task_id, task_id):
                    sends.append(Send(job_id, chunk_id, task_id, queue, priority, old_task_id))
                    done.chunks_redispatched.append(chunk_id)
        self._send(sends)

    def package_finished_jobs(self, now: datetime, done: Sweep) -> None:
        with self.db.session() as session:
            ready = [
                job
                for job in self._locked(
                    session,
                    select(Job).where(
                        Job.status.in_(ACTIVE),
                        Job.frames_rendered >= Job.frame_end - Job.frame_start + 1,
                        Job.updated_at < now - self.timeout,
                    ),
                )
                if states.chunks_left(session, job.id) == 0
            ]
            for job in ready:
                states.touch_job(session, job.id)  # so the next pass waits before sending again
        self._package(ready, resume=False, done=done)

    def resume_stalled_packaging(self, now: datetime, done: Sweep) -> None:
        with self.db.session() as session:
            stalled = self._locked(
                session,
                select(Job).where(
                    Job.status.in_((JobStatus.PACKAGING, JobStatus.UPLOADING)), Job.updated_at < now - self.timeout
                ),
            )
            for job in stalled:
                states.touch_job(session, job.id)
        self._package(stalled, resume=True, done=done)

    def settle_cancels(self, now: datetime, done: Sweep) -> None:
        with self.db.session() as session:
            for job in self._locked(session, select(Job).where(Job.status == JobStatus.CANCELING)):
                if states.settle_cancel(session, job.id, actor=self.name):
                    done.jobs_settled.append(job.id)

    def _send(self, sends: list[Send]) -> None:
        retire_tasks(self.celery, [s.old_task_id for s in sends if s.old_task_id])
        for send in sends:
            send_render(self.celery, send.job_id, send.chunk_id, send.task_id, queue=send.queue, priority=send.priority)

    def _package(self, jobs: Sequence[Job], *, resume: bool, done: Sweep) -> None:
        for job in jobs:
            send_packaging(self.celery, job.id, queue=job.queue, resume=resume)
            done.jobs_packaged.append(job.id)

    def run(self, stop: threading.Event) -> None:
        """Sweep every FARM_JANITOR_SECONDS until `stop` is set."""
        while not stop.wait(self.settings.janitor_seconds):
            self.sweep()


def _forget_job(session: Session, job_id: str) -> None:
    """Delete the job's rows: frames, chunks, the blobs it named (the blobs themselves expire on their own) and its
    events. Explicit deletes, child tables first: SQLite does not enforce the foreign keys' ON DELETE CASCADE."""
    for table, column in (
        (Frame, Frame.job_id),
        (Chunk, Chunk.job_id),
        (JobBlob, JobBlob.job_id),
        (Event, Event.job_id),
        (Job, Job.id),
    ):
        session.execute(delete(table).where(column == job_id))
