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
- deleted jobs whose cancel has settled lose their files and rows, and jobs that finished FARM_RETENTION_DAYS ago
  are deleted (`farm.jobs.deletion`);
- each job's storage used is measured again after it changed (`farm.jobs.storage_usage`);
- S3 multipart uploads abandoned for FARM_MULTIPART_ABORT_HOURS (a packager killed mid-zip) are aborted;
- webhook deliveries due again (a failed one's retry) are handed to this process's courier;
- preview jobs (`preview=1`) that ended longer than FARM_PREVIEW_TTL_HOURS ago are deleted, files and rows.

What it does is counted for Prometheus (`farm_janitor_actions_total{action}`).

Every action is a compare-and-set through `farm.jobs.states`, and candidate rows are locked with SKIP LOCKED on
Postgres, so any number of janitors can run at once without doing anything twice.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from farm import metrics
from farm.clock import database_now
from farm.config import Settings
from farm.db import Database
from farm.errors import NotFound
from farm.jobs import deletion, states, storage_usage
from farm.messaging import broker
from farm.messaging.dispatch import after_commit, new_task_id, retire_tasks, send_packaging, send_render
from farm.models import Chunk, ChunkStatus, Job, JobStatus, Worker, WorkerStatus
from farm.projects import blob_store
from farm.storage import Storage, open_storage
from farm.webhooks import courier

log = logging.getLogger(__name__)
ACTIVE = (JobStatus.QUEUED, JobStatus.RENDERING)
STOPPING = (JobStatus.CANCELING, JobStatus.CANCELED, JobStatus.FAILED)
UPLOADS_EVERY = 600.0  # seconds between a janitor's looks for abandoned multipart uploads


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
    jobs_purged: list[str] = field(default_factory=list)
    jobs_retired: list[str] = field(default_factory=list)
    jobs_measured: list[str] = field(default_factory=list)
    uploads_aborted: list[str] = field(default_factory=list)
    previews_expired: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(vars(self).values())


class Janitor:
    def __init__(self, db: Database, celery: Celery, settings: Settings, name: str) -> None:
        self.db, self.celery, self.settings, self.name = db, celery, settings, name
        self.timeout = timedelta(seconds=settings.worker_timeout_seconds)
        self.uploads_due = time.monotonic() + UPLOADS_EVERY  # abandoned uploads age in hours: no hurry at start
        self.storage_tally: threading.Thread | None = None

    def _locked(self, session: Session, query):  # type: ignore[no-untyped-def]
        return session.scalars(query.with_for_update(skip_locked=True)).all()

    def sweep(self, *, storage_apart: bool = False) -> Sweep:
        """One pass over every duty. With `storage_apart` (the janitor's own loop), measuring storage runs in a
        thread of its own; a test's sweep runs it in line, on its one connection."""
        done = Sweep()
        try:  # every judgement of staleness by the database's clock, which wrote every heartbeat
            with self.db.session() as session:
                now = database_now(session)
        except Exception:
            log.exception("janitor %s cannot read the database's clock", self.name)
            return done
        tally = self._tally_storage(now, done) if storage_apart else None
        steps = [
            self.mark_silent_workers,
            self.recover_silent_chunks,
            self.redispatch_lost_tasks,
            self.package_finished_jobs,
            self.resume_stalled_packaging,
            self.settle_cancels,
            self.expire_blobs,
            self.retire_old_jobs,
            self.purge_deleted_jobs,
            self.deliver_webhooks,
            self.expire_previews,
            *([] if storage_apart else self._storage_steps()),
        ]
        self._run(steps, now, done)
        if tally is not None:
            tally.join(self.settings.janitor_seconds)  # its findings join this sweep's report if it is quick
        if done:
            log.info("janitor %s: %s", self.name, {k: v for k, v in vars(done).items() if v})
        for action, subjects in vars(done).items():
            if subjects:
                metrics.JANITOR_ACTIONS.labels(action=action).inc(len(subjects))
        metrics.CHUNK_RETRIES.labels(reason="silent").inc(len(done.chunks_requeued))
        return done

    def _run(self, steps: list[Any], now: datetime, done: Sweep) -> None:
        for step in steps:
            try:
                step(now, done)
            except Exception:  # one failing step (say, the broker is down) must not stop the others
                log.exception("janitor step %s failed", step.__name__)

    def _tally_storage(self, now: datetime, done: Sweep) -> threading.Thread | None:
        """Measure jobs' storage (and abort abandoned uploads, when due) in a thread of its own: listing what storage
        holds hangs while storage does, and must never hold up the duties that keep jobs moving. One at a time: a
        sweep while the last is still listing starts none."""
        if self.storage_tally is not None and self.storage_tally.is_alive():
            return None
        self.storage_tally = threading.Thread(
            target=self._run, args=(self._storage_steps(), now, done), name="janitor-storage", daemon=True
        )
        self.storage_tally.start()
        return self.storage_tally

    def _storage_steps(self) -> list[Any]:
        steps: list[Any] = [self.measure_storage]
        if time.monotonic() >= self.uploads_due:
            self.uploads_due = time.monotonic() + UPLOADS_EVERY
            steps.append(self.abort_stale_uploads)
        return steps

    def deliver_webhooks(self, now: datetime, done: Sweep) -> None:
        """Failed deliveries due for another try, and any whose sender died before trying: this process's courier
        sends them in its own thread, so a slow receiver never holds up the sweep."""
        courier.wake()

    def expire_blobs(self, now: datetime, done: Sweep) -> None:
        with self.db.session() as session:
            done.blobs_expired.extend(blob_store.expire(session, self.storage, self.settings.blob_ttl_days))

    def retire_old_jobs(self, now: datetime, done: Sweep) -> None:
        days = self.settings.retention_days
        if days is None:
            return
        with self.db.session() as session:
            old = deletion.expired(session, now - timedelta(days=days))
        for job_id in old:
            try:
                with self.db.session() as session:  # one job a transaction: a failure costs only its own retry
                    deletion.delete_job(
                        session, self.storage, job_id, actor=self.name, reason=f"finished over {days:g} days ago"
                    )
            except NotFound:  # another janitor (or a user) deleted it meanwhile
                continue
            done.jobs_retired.append(job_id)

    def purge_deleted_jobs(self, now: datetime, done: Sweep) -> None:
        """Deleted jobs that were active: purged once canceled, and quiet for a worker timeout (a renderer that was
        stopping has stored its last frame by then)."""
        with self.db.session() as session:
            ready = deletion.ready_to_purge(session, now - self.timeout)
        for job_id in ready:
            with self.db.session() as session:
                if session.get(Job, job_id, with_for_update=True) is not None:  # another janitor may have done it
                    deletion.purge(session, self.storage, job_id)
                    done.jobs_purged.append(job_id)

    def measure_storage(self, now: datetime, done: Sweep) -> None:
        with self.db.session() as session:
            due = storage_usage.due(session, now)
        for job_id in due:
            with self.db.session() as session:
                if not storage_usage.take(session, job_id, now):  # another janitor measures it
                    continue
            with self.db.session() as session:  # the job's row is not held while storage lists its files
                storage_usage.measure(session, self.storage, job_id, now)
            done.jobs_measured.append(job_id)

    def abort_stale_uploads(self, now: datetime, done: Sweep) -> None:
        """Run every UPLOADS_EVERY, not every sweep: listing uploads is a request, and they age in hours."""
        age = timedelta(hours=self.settings.multipart_abort_hours)
        done.uploads_aborted.extend(self.storage.abort_uploads(older_than=age))

    def expire_previews(self, now: datetime, done: Sweep) -> None:
        """A preview is a quick look, not a deliverable: once it has ended for FARM_PREVIEW_TTL_HOURS, its frames,
        zip, movie and logs go from storage, then its rows, as a user's delete does (`farm.jobs.deletion`)."""
        cutoff = now - timedelta(hours=self.settings.preview_ttl_hours)
        with self.db.session() as session:
            for job in self._locked(
                session,
                select(Job).where(
                    Job.preview,
                    Job.deleted_at.is_(None),
                    Job.status.in_(states.TERMINAL_JOB),
                    Job.finished_at < cutoff,
                ),
            ):
                reason = f"a preview, ended over {self.settings.preview_ttl_hours:g} hours ago"
                deletion.delete_job(session, self.storage, job.id, actor=self.name, reason=reason)
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
                        self._resend(session, job, chunk.id, task_id, old_task_id)
                        done.chunks_requeued.append(chunk.id)

    def redispatch_lost_tasks(self, now: datetime, done: Sweep) -> None:
        with self.db.session() as session:
            waiting = session.execute(
                select(Chunk.id, Chunk.task_id, Job)
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
        for queue in {row.Job.queue for row in waiting}:
            held[queue] = broker.pending_task_ids(
                self.settings, broker.queue_names(queue, live), held_within=self.timeout.total_seconds()
            )
        with self.db.session() as session:
            for chunk_id, old_task_id, job in waiting:
                if old_task_id in held[job.queue]:
                    continue
                task_id = new_task_id()
                if states.replace_task(session, chunk_id, old_task_id, task_id):
                    self._resend(session, job, chunk_id, task_id, old_task_id)
                    done.chunks_redispatched.append(chunk_id)

    def package_finished_jobs(self, now: datetime, done: Sweep) -> None:
        with self.db.session() as session:
            ready = [
                job
                for job in self._locked(
                    session,
                    select(Job).where(
                        Job.status.in_(ACTIVE),
                        # a split still's frame is made by its packager, from its parts
                        (Job.frames_rendered >= Job.frame_end - Job.frame_start + 1) | (Job.split > 1),
                        Job.updated_at < now - self.timeout,
                    ),
                )
                if states.chunks_left(session, job.id) == 0
            ]
            for job in ready:
                states.touch_job(session, job.id)  # so the next pass waits before sending again
                self._package(session, job, resume=False, done=done)

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
                self._package(session, job, resume=True, done=done)

    def settle_cancels(self, now: datetime, done: Sweep) -> None:
        with self.db.session() as session:
            for job in self._locked(session, select(Job).where(Job.status == JobStatus.CANCELING)):
                if states.settle_cancel(session, job.id, actor=self.name):
                    done.jobs_settled.append(job.id)

    def _resend(self, session: Session, job: Job, chunk_id: int, task_id: str, old_task_id: str | None) -> None:
        """Once committed: send the chunk's new task, and retire the one it replaces (so the chord stops waiting)."""

        def send() -> None:
            if old_task_id:
                retire_tasks(self.celery, [old_task_id])
            send_render(self.celery, job.id, chunk_id, task_id, queue=job.queue, priority=job.priority)

        after_commit(session, send)

    def _package(self, session: Session, job: Job, *, resume: bool, done: Sweep) -> None:
        queue = job.queue
        after_commit(session, lambda: send_packaging(self.celery, job.id, queue=queue, resume=resume))
        done.jobs_packaged.append(job.id)

    def run(self, stop: threading.Event) -> None:
        """Every FARM_JANITOR_SECONDS until `stop` is set, sweep if no other janitor of the farm has lately. Every
        worker runs a janitor; without turns, 64 workers would sweep 64 times as often as one, each sweep reading
        the broker's whole queue once chunks wait longer than the worker timeout."""
        seconds = self.settings.janitor_seconds
        while not stop.wait(seconds):
            # Only a janitor that reaches the database takes a turn: one cut off from it would otherwise win the
            # turn, sweep nothing, and keep every other janitor from recovering its work.
            if self.reaches_database() and broker.janitor_turn(self.settings, self.name, 0.9 * seconds):
                self.sweep(storage_apart=True)

    def reaches_database(self) -> bool:
        try:
            with self.db.session() as session:
                database_now(session)
        except Exception as exc:
            log.warning("janitor %s cannot reach the database, so takes no turn: %s", self.name, exc)
            return False
        return True
