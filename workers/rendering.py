"""Render one chunk: claim it in the database, run Blender on its unfinished frames, store each frame the moment
Blender writes it, and end the chunk as DONE, CANCELED, or FAILED with Blender's words — then retry it on another
worker while attempts remain.

Database and storage outages are ridden out with backoff (a frame Blender finished is never dropped because S3 or
Postgres blinked); the chunk's heartbeat tells the janitor this renderer is alive. Anything else that goes wrong in
the worker while a chunk renders (a helper thread's death, a full disk, an upload that cannot be made) fails the
chunk at once with that exception as its reason, so it is retried elsewhere instead of waiting out the stall
timeout. A worker without disk room for a chunk's frames passes the chunk on before it takes it.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import Celery
from celery.exceptions import Reject
from sqlalchemy import select
from sqlalchemy.orm import Session

from farm import metrics
from farm.blender import devices
from farm.blender.launcher import blender_command, blender_error
from farm.blender.progress import FrameProgress
from farm.jobs import fair_share, planning, splitting, states
from farm.jobs.scheduling import failures, live_workers, place_chunk
from farm.messaging.dispatch import after_commit, new_task_id, send_packaging, send_render
from farm.models import Chunk, ChunkStatus, Frame, Job, JobStatus, Worker
from farm.retrying import is_transient, with_retries
from farm.storage import regular_file, sha256_file
from farm.storage.previews import store_thumbnail
from workers.benchmark_renderers import is_benchmark_renderer, render_nothing
from workers.blender_process import BlenderProcess, Outcome
from workers.context import WorkerContext
from workers.disk import DISK_FULL, blame_disk, failure_reason, refuse_if_full, room_for
from workers.warm_blender import RENDER_SCRIPT, WARM

log = logging.getLogger(__name__)
LOG_UPLOAD_SECONDS = 5.0
PROGRESS_SECONDS = 1.0  # how often a chunk's progress inside a frame may be written
KILLED = "Blender was killed by signal 9, not by the farm"  # a retry looks for a worker with more memory


def log_key(chunk: Chunk, attempt: int) -> str:
    return f"jobs/{chunk.job_id}/logs/chunk-{chunk.index:04d}-attempt-{attempt}.log"


@dataclass(frozen=True)
class ChunkWork:
    """A snapshot of what the chunk needs, taken in the claiming transaction."""

    chunk: Chunk  # as claimed (detached): its id, job, index and this attempt's number
    frames: list[int]
    last_frame: int
    priority: int
    queue: str
    source_sha256: str  # the project's manifest, by which the worker builds the job's project folder
    spec: dict[str, Any]
    part: dict[str, Any] | None = None  # a split still's part (farm.jobs.splitting.part_spec), None for frames

    @property
    def job_id(self) -> str:
        return self.chunk.job_id

    @property
    def chunk_id(self) -> int:
        return self.chunk.id

    @property
    def index(self) -> int:
        return self.chunk.index

    @property
    def attempt(self) -> int:
        return self.chunk.attempts

    @property
    def ext(self) -> str:
        """A part is always an OpenEXR of the render's passes; a frame is in the job's format."""
        return "exr" if self.part else planning.EXTENSIONS[self.spec["output_format"]]

    @property
    def log_key(self) -> str:
        return log_key(self.chunk, self.attempt)

    def frame_key(self, frame: int, sha256: str) -> str:
        return planning.frame_key(self.job_id, frame, self.ext, self.last_frame, sha256)


class Blocklisted(Exception):
    """This worker failed too many of the job's chunks: it passes the chunk on if another worker can take it."""


class NoRoom(Exception):
    """This worker's disk has no room for the chunk's frames above its floor: it passes the chunk on if a worker
    with a healthy disk can take it."""


def claim(
    ctx: WorkerContext, chunk_id: int, worker: str, task_id: str | None, *, checks: bool, queue: str | None = None
) -> ChunkWork | None:
    """Claim the chunk, or with `checks` and the shared `queue` the task came from, the chunk fair share picks."""

    def admit(found: states.Admission) -> None:
        """A disabled worker puts the message back for an enabled one; with `checks`, a blocklisted one raises
        Blocklisted, and one without room for the chunk's frames (by the job's frame sizes so far) NoRoom."""
        if found.disabled:
            raise Reject("this worker is disabled", requeue=True)
        if not checks:
            return
        if found.failed >= ctx.settings.blocklist_failures:
            raise Blocklisted
        needed = int(found.frame_bytes * found.frames)
        if not room_for(ctx.settings.cache_dir, ctx.frames, ctx.settings.min_free_bytes, needed):
            raise NoRoom

    with ctx.db.session() as session:
        if checks and queue and task_id:  # a refusal by `admit` rolls a trade back with the claim
            chunk_id = fair_share.fairest(session, chunk_id, task_id, queue)
        claimed = states.claim_chunk(
            session,
            chunk_id,
            worker,
            task_id,
            stale_after=timedelta(seconds=ctx.settings.worker_timeout_seconds),
            log_key=log_key,
            admit=admit,
        )
        if claimed is None:
            return None
        job, part = claimed.job, None
        if job.split > 1:  # every attempt renders the part whole: its frame is done only once the parts are merged
            size = (job.resolution_x or 0, job.resolution_y or 0, job.resolution_percentage or 100)
            part = splitting.part_spec(
                engine=job.engine,
                samples=job.samples,
                size=splitting.frame_size(*size),
                parts=job.split,
                index=claimed.chunk.index,
            )
        return ChunkWork(
            chunk=claimed.chunk,
            frames=[claimed.chunk.frame_start] if part else claimed.frames,
            part=part,
            last_frame=job.frame_end,
            priority=job.priority,
            queue=job.queue,
            source_sha256=job.source_sha256,
            spec=job.render_settings(),
        )


class ChunkRun:
    """The Blender side of one chunk: events in, frames stored, reasons kept."""

    def __init__(self, ctx: WorkerContext, work: ChunkWork, worker: str) -> None:
        self.ctx, self.work, self.worker = ctx, work, worker
        self.device: str | None = None
        self.error: str | None = None
        self.stored: set[int] = set()
        self.workdir = ctx.settings.cache_dir / "work" / f"{work.job_id}-{work.index}-{work.attempt}"
        self.log_path = self.workdir / "blender.log"
        self.log_uploaded_at = time.monotonic()
        self.beat_ok_at = time.monotonic()  # when the database last answered a heartbeat
        self.lost = False
        self.progress = FrameProgress(work.frames)  # of the frame Blender renders now, from its output
        self.shown: tuple[float, float] = (0.0, -1.0)  # (frame share, chunk %) last written to the database
        self.shown_at = 0.0

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "ready":
            self.device = str(event.get("device"))
            self.upload_log()  # the live log shows at once that Blender has the chunk
        elif kind == "error":
            self.error = str(event.get("message"))
        elif kind == "frame" and not self.lost:  # a chunk taken back gets nothing more stored
            frame, ms = event.get("frame"), event.get("ms")
            if type(frame) is not int or frame not in self.work.frames or frame in self.stored:
                log.warning("chunk %s/%s: ignored a frame event for frame %r", self.work.job_id, self.work.index, frame)
                return
            image = self.image_path(frame)
            if image is None:
                self.error = f"Blender reported frame {frame}, but its image is not where the farm looks for it"
                return
            render_ms = float(ms) if isinstance(ms, int | float) else 0.0
            if self.work.part:
                self.store_part(frame, image, render_ms, splitting.clean_recipe(event.get("recipe")))
            else:
                self.store_frame(frame, image, render_ms)

    @property
    def complete(self) -> bool:
        """Every frame is stored and recorded in this attempt: nothing Blender does after can change how it ends."""
        return not self.lost and not set(self.work.frames) - self.stored

    def image_path(self, frame: int) -> Path | None:
        """Where the render script writes `frame`, if a regular file is there. The path comes from the chunk, never
        from Blender: the worker reads, moves and deletes only the images in the folder it made for this chunk."""
        image = self.workdir / "out" / f"{frame:07d}.{self.work.ext}"
        return image if regular_file(image) else None

    def store_frame(self, frame: int, path: Path, render_ms: float) -> None:
        """Upload and record; outages are waited out. After longer than the worker timeout without reaching the
        database, the claim is checked before anything is uploaded: the janitor may have given the chunk to another
        worker meanwhile."""
        if time.monotonic() - self.beat_ok_at > self.ctx.settings.worker_timeout_seconds:
            with_retries(self.beat, what="checking the chunk is still ours")
            if self.lost:
                return
        refuse_if_full(path.parent, f"the image of frame {frame}")
        sha256, size = sha256_file(path), path.stat().st_size
        key = self.work.frame_key(frame, sha256)
        storage = self.ctx.storage
        # No HEAD first: the key names the bytes, so a second PUT of a frame stored before writes what is there.
        with_retries(
            lambda: storage.put_file(key, path, planning.CONTENT_TYPES[self.work.ext]), what=f"storing frame {frame}"
        )
        store_thumbnail(storage, key, path)

        def record() -> tuple[str | None, bool]:
            """The key the frame is recorded with, and whether the chunk is still this attempt's."""
            with self.ctx.db.session() as session:
                recorded: str | None = key
                if not states.frame_done(
                    session,
                    self.work.job_id,
                    frame,
                    worker=self.worker,
                    render_time_ms=render_ms,
                    device=self.device,
                    image_key=key,
                    sha256=sha256,
                    size=size,
                    attempt=self.work.attempt,
                ):
                    recorded, status, owner, attempts = session.execute(
                        select(Frame.image_key, Chunk.status, Chunk.worker, Chunk.attempts)
                        .join(Chunk, Chunk.id == Frame.chunk_id)
                        .where(Frame.job_id == self.work.job_id, Frame.frame == frame)
                    ).one()
                    if (status, owner, attempts) != (ChunkStatus.RENDERING, self.worker, self.work.attempt):
                        return recorded, False
                return recorded, True

        recorded, ours = with_retries(record, what=f"recording frame {frame}")
        self.beat_ok_at = time.monotonic()
        self.lost = not ours
        if recorded != key:  # another renderer stored this frame first (or took the chunk back): keep theirs
            with_retries(lambda: storage.delete(key), what=f"dropping a duplicate of frame {frame}")
            path.unlink(missing_ok=True)
        else:
            self.ctx.frames.keep(path, sha256, size)  # for a packager on this machine
            metrics.FRAME_SECONDS.labels(worker=self.worker, device=self.device or "unknown").observe(render_ms / 1000)
        self.stored.add(frame)
        self.progress.frame_done(frame)

    def store_part(self, frame: int, path: Path, render_ms: float, recipe: dict[str, Any]) -> None:
        """Upload a split still's part under a key of this attempt's own and record it on the chunk, only while the
        chunk is still this attempt's: a part rendered twice (a retry, a takeover) is counted once, the last
        recorded. Its frame is stored when the parts are merged, by the packager."""
        refuse_if_full(path.parent, f"part {self.work.index} of frame {frame}")
        sha256, size = sha256_file(path), path.stat().st_size
        key = splitting.part_key(self.work.job_id, frame, self.work.index, self.work.attempt, sha256)
        storage = self.ctx.storage
        with_retries(lambda: storage.put_file(key, path, "image/x-exr"), what=f"storing part {self.work.index}")
        part = dict(key=key, sha256=sha256, size=size, ms=render_ms, device=self.device, recipe=recipe)

        def record() -> bool:
            with self.ctx.db.session() as session:
                return states.part_done(
                    session, self.work.job_id, self.work.chunk_id, self.worker, self.work.attempt, part
                )

        ours = with_retries(record, what=f"recording part {self.work.index}")
        self.beat_ok_at = time.monotonic()
        self.lost = not ours
        if not ours:  # another attempt renders this part now: its file is the one that counts
            with_retries(lambda: storage.delete(key), what=f"dropping part {self.work.index} of a lost attempt")
        path.unlink(missing_ok=True)
        self.stored.add(frame)
        self.progress.frame_done(frame)

    def should_stop(self) -> str | None:
        """A reason to kill Blender now: the job was canceled or failed, or the chunk is no longer ours."""
        if self.complete:  # Blender is only saying it is done
            return None
        if self.lost:
            return "chunk taken back"
        try:
            with self.ctx.db.session() as session:
                job_status, chunk_status, owner = session.execute(
                    select(Job.status, Chunk.status, Chunk.worker)
                    .join(Chunk, Chunk.job_id == Job.id)
                    .where(Chunk.id == self.work.chunk_id)
                ).one()
        except Exception as exc:
            if not is_transient(exc):
                raise
            return None  # the database is away: keep rendering, frames wait in the retry loop
        if job_status in (JobStatus.CANCELING, JobStatus.CANCELED):
            return "canceled"
        if job_status == JobStatus.FAILED:
            return "job failed"
        if chunk_status != ChunkStatus.RENDERING or owner != self.worker:
            return "chunk taken back"
        return None

    def beat(self) -> None:
        """Heartbeat the chunk, on the database's clock; a chunk no longer ours (taken back or over) is lost."""
        with self.ctx.db.session() as session:
            self.lost = not states.chunk_heartbeat(session, self.work.chunk_id, self.worker, self.work.attempt)
        self.beat_ok_at = time.monotonic()

    def beat_until(self, stop: threading.Event) -> None:
        """Heartbeat the chunk every FARM_HEARTBEAT_SECONDS until `stop`, in a thread of its own: fetching a large
        project or uploading a large frame (or waiting on a busy database) can take longer than the worker timeout,
        and a chunk whose heartbeat waited on them would be taken back while it renders."""
        while not stop.wait(self.ctx.settings.heartbeat_seconds):
            try:
                self.beat()
            except Exception as exc:  # the next beat tries again; the janitor judges only a long silence
                if not is_transient(exc):
                    log.exception("heartbeat of chunk %s/%s failed", self.work.job_id, self.work.index)

    def on_tick(self) -> None:
        """Every second while Blender runs: keep the stored log a few seconds behind, and show progress."""
        now = time.monotonic()
        if now - self.log_uploaded_at >= LOG_UPLOAD_SECONDS:
            self.upload_log()
        if now - self.shown_at >= PROGRESS_SECONDS and not self.complete and not self.lost:
            self.show_progress(now)

    def chunk_percent(self, fraction: float) -> float:
        """The chunk's share done: its frames done before this attempt, those stored since, and `fraction` of the
        one rendering now."""
        total = self.work.chunk.frame_end - self.work.chunk.frame_start + 1
        done = total - len(self.work.frames) + len(self.stored)
        return round(min(100.0, 100 * (done + fraction) / total), 1)

    def show_progress(self, now: float) -> None:
        """Write the chunk's progress if it moved (one small UPDATE a second at most, which also wakes the job's
        live views). Best effort: an outage only delays the next one."""
        fraction = round(self.progress.fraction, 3)
        shown = (fraction, self.chunk_percent(fraction))
        if shown == self.shown:
            return
        self.shown_at = now
        try:
            with self.ctx.db.session() as session:
                states.chunk_progress(
                    session, self.work.job_id, self.work.chunk_id, self.worker, self.work.attempt, *shown
                )
            self.shown = shown
        except Exception as exc:
            if not is_transient(exc):
                raise

    def upload_log(self) -> None:
        """Best effort: a log that cannot be stored now is stored at the next tick or at the end."""
        self.log_uploaded_at = time.monotonic()
        if not self.log_path.is_file():
            return
        try:
            self.ctx.storage.put_file(self.work.log_key, self.log_path, "text/plain; charset=utf-8")
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("could not store the log of chunk %s/%s: %s", self.work.job_id, self.work.index, exc)

    def run(self) -> tuple[ChunkStatus, str | None]:
        """Render every frame of the chunk; the chunk's end status and, if not DONE, why. Whatever this worker
        raises on the way fails the chunk now, with the exception as its reason."""
        stop = threading.Event()
        beating = threading.Thread(target=self.beat_until, args=(stop,), name="chunk-heartbeat", daemon=True)
        beating.start()
        try:
            status, reason = self._run()
        except Exception as exc:
            if self.complete:  # what failed after the last frame was recorded does not matter
                return ChunkStatus.DONE, None
            log.exception("chunk %s/%s failed in this worker", self.work.job_id, self.work.index)
            status, reason = ChunkStatus.FAILED, failure_reason(exc)
        finally:
            stop.set()
            beating.join()
        if status == ChunkStatus.FAILED:
            reason = blame_disk(reason or "unknown", self.ctx.settings.cache_dir)
        return status, reason

    def _run(self) -> tuple[ChunkStatus, str | None]:
        (self.workdir / "out").mkdir(parents=True, exist_ok=True)
        try:
            blend = with_retries(
                lambda: WARM.project_for(
                    self.ctx.settings, self.ctx.storage, self.work.job_id, self.work.source_sha256
                ),
                what="fetching the scene",
            )
        except (OSError, RuntimeError) as exc:
            return ChunkStatus.FAILED, f"could not fetch the scene: {exc}"
        try:
            choice = devices.choose(self.work.spec["device"], self.work.spec["engine"], self.ctx.devices)
        except devices.NoDevice as exc:
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(f"farm: {exc}\n")
            self.upload_log()
            return ChunkStatus.FAILED, str(exc)
        self.device = choice.label
        spec = dict(
            self.work.spec,
            device=choice.to_spec(),
            blend=str(blend),
            out=str(self.workdir / "out"),
            frames=self.work.frames,
            trusted_scripts=self.ctx.settings.trusted_scripts,
            part=self.work.part,
        )
        outcome = self.render(spec)
        self.upload_log()
        if self.complete:  # whatever Blender's exit looked like
            return ChunkStatus.DONE, None
        if self.lost:  # whatever Blender did since, the chunk is another attempt's now
            return ChunkStatus.CANCELED, "chunk taken back"
        if outcome.stopped in ("canceled", "job failed", "chunk taken back"):
            return ChunkStatus.CANCELED, outcome.stopped
        if outcome.failure is not None:  # a helper thread died: Blender was stopped for it
            return ChunkStatus.FAILED, failure_reason(outcome.failure)
        reason = self.error or outcome.stopped or blender_error(outcome.log_tail)
        if outcome.returncode == -signal.SIGKILL and outcome.stopped is None:
            reason = (
                f"{KILLED} (the kernel's out-of-memory killer, most likely), "
                f"at a peak resident memory of {outcome.peak_rss / 2**20:.0f} MiB: {reason}"
            )
        elif outcome.returncode and outcome.returncode < 0:
            reason = f"Blender was killed by signal {-outcome.returncode}: {reason}"
        return ChunkStatus.FAILED, reason

    def render(self, spec: dict[str, Any]) -> Outcome:
        """In the job's warm Blender (FARM_WARM_BLENDER=1, the default), or in a fresh one that exits after."""
        settings = self.ctx.settings
        if is_benchmark_renderer(settings.renderer):
            return render_nothing(
                spec, self.on_event, settings.renderer, should_stop=self.should_stop, on_tick=self.on_tick
            )
        watch: dict[str, Any] = dict(
            should_stop=self.should_stop,
            on_tick=self.on_tick,
            on_output=self.progress.feed,
            stall_seconds=settings.frame_timeout_seconds,
        )
        if not settings.warm_blender:
            argv = blender_command(settings, RENDER_SCRIPT, [json.dumps(spec)])
            return BlenderProcess(settings, argv, self.log_path, self.hide(spec)).run(self.on_event, **watch)
        process = WARM.for_chunk(settings, self.work.job_id, self.log_path, self.hide(spec))
        if not process.send(spec):  # it died since its last chunk: a fresh one
            WARM.recycle()
            process = WARM.for_chunk(settings, self.work.job_id, self.log_path, self.hide(spec))
            process.send(spec)
        outcome = process.run(self.on_event, keep=True, **watch)
        WARM.after_chunk(settings, clean=outcome.returncode == 0 and outcome.stopped is None)
        return outcome

    def hide(self, spec: dict[str, Any]) -> dict[str, str]:
        """This worker's folders as the chunk's log shows them: the project by its own name, the rest not at all."""
        project = WARM.project.folder if WARM.project is not None else Path(spec["blend"]).parent
        return {
            str(project): "<project>",
            str(self.workdir): "<work folder>",
            str(self.ctx.settings.cache_dir): "<cache>",
        }

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass(frozen=True)
class Ending:
    """What a chunk's end left behind in its job."""

    all_done: bool  # every chunk of the job is DONE: package it
    none_queued: bool  # no chunk of the job waits for a renderer: the job's warm Blender may go


def end_chunk(session: Session, work: ChunkWork, status: ChunkStatus, worker: str, reason: str | None = None) -> Ending:
    job_status = states.finish_chunk(
        session, work.chunk, status, worker=worker, reason=reason, log_key=work.log_key, attempt=work.attempt
    )
    if job_status in (None, JobStatus.CANCELING):
        states.settle_cancel(session, work.job_id, actor=worker)
    left, queued = states.chunks_pending(session, work.job_id)
    return Ending(all_done=status == ChunkStatus.DONE and not left, none_queued=not queued)


def pass_on_if_blocklisted(ctx: WorkerContext, celery: Celery, job_id: str, chunk_id: int, worker: str) -> str | None:
    """A worker blocklisted for this job hands the chunk to another worker (or fails the job if none is left)."""
    with ctx.db.session() as session:
        chunk = session.get(Chunk, chunk_id)
        if chunk is None or chunk.status != ChunkStatus.QUEUED:
            return None
        if not failures(session, job_id).blocklisted(worker, ctx.settings.blocklist_failures):
            return None
        job = session.get(Job, job_id)
        assert job is not None
        placement = place_chunk(session, job_id, chunk.index, queue=job.queue, settings=ctx.settings, asking=worker)
        if placement.refused:
            states.fail_job(session, job_id, f"chunk {chunk.index} cannot be placed: {placement.refused}", actor=worker)
            return "refused"
        return hand_over(session, celery, job, chunk, placement.worker)


def pass_on_for_room(ctx: WorkerContext, celery: Celery, job_id: str, chunk_id: int, worker: str) -> str | None:
    """A worker without disk room for the chunk hands it to a live worker whose disk is healthy, if there is one."""
    with ctx.db.session() as session:
        chunk = session.get(Chunk, chunk_id)
        job = session.get(Job, job_id)
        if chunk is None or job is None or chunk.status != ChunkStatus.QUEUED:
            return None
        others = healthy_others(session, ctx, job.queue, worker)
        if not others:
            return None
        return hand_over(session, celery, job, chunk, min(others, key=lambda w: (others[w], w)))


def healthy_others(session: Session, ctx: WorkerContext, queue: str, worker: str) -> dict[str, int]:
    """Live workers of `queue` other than `worker` whose disk is healthy, with how many chunks each renders now."""
    live = live_workers(session, queue, ctx.settings)
    healthy = session.scalars(select(Worker.hostname).where(Worker.hostname.in_(live), Worker.health.is_(None)))
    return {w: live[w] for w in healthy if w != worker}


def hand_over(session: Session, celery: Celery, job: Job, chunk: Chunk, to: str | None) -> str:
    """Give a QUEUED chunk a new task for another worker (or the shared queue), sent once this is committed."""
    task_id = new_task_id()
    if not states.replace_task(session, chunk.id, chunk.task_id, task_id):
        return "raced"  # another process replaced the task first
    queue, priority = job.queue, job.priority
    after_commit(
        session,
        lambda: send_render(celery, job.id, chunk.id, task_id, queue=queue, priority=priority, worker=to),
    )
    return f"passed to {to or 'the shared queue'}"


def retry_or_fail(ctx: WorkerContext, celery: Celery, work: ChunkWork, chunk: Chunk, reason: str, worker: str) -> None:
    """After a failure: re-queue on a worker that has not failed it while attempts remain, else fail the job."""
    with ctx.db.session() as session:
        if work.attempt >= ctx.settings.chunk_attempts:
            states.fail_job(
                session,
                work.job_id,
                f"chunk {work.index} (frames {chunk.frame_start}-"
                f"{chunk.frame_end}) failed {work.attempt} times; last: {reason}",
                actor=worker,
            )
            return
        placement = place_chunk(
            session,
            work.job_id,
            work.index,
            queue=work.queue,
            settings=ctx.settings,
            asking=worker,
            more_memory=reason.startswith(KILLED),
        )
        if placement.refused:
            states.fail_job(
                session, work.job_id, f"chunk {work.index} failed ({reason}) and {placement.refused}", actor=worker
            )
            return
        task_id = new_task_id()
        if states.requeue_chunk(
            session,
            chunk,
            task_id=task_id,
            actor=worker,
            reason=f"retry {work.attempt + 1} of {ctx.settings.chunk_attempts}",
        ):
            after_commit(
                session,
                lambda: send_render(
                    celery,
                    work.job_id,
                    work.chunk_id,
                    task_id,
                    queue=work.queue,
                    priority=work.priority,
                    worker=placement.worker,
                ),
            )
            after_commit(session, metrics.CHUNK_RETRIES.labels(reason="failed").inc)


def held_by(ctx: WorkerContext, task_id: str) -> tuple[str, int] | None:
    with ctx.db.session() as session:
        return fair_share.holder(session, task_id)


def render_chunk(
    ctx: WorkerContext,
    celery: Celery,
    job_id: str,
    chunk_id: int,
    *,
    worker: str,
    task_id: str | None,
    queue: str | None = None,
) -> str:
    """The whole life of one chunk on this worker; returns what happened (for the task's result). The task renders
    the chunk that holds its id now (fair share trades ids between waiting chunks), else the one it was sent for;
    `queue` is the queue it came from."""
    if task_id:
        job_id, chunk_id = with_retries(lambda: held_by(ctx, task_id), what="finding the task's chunk") or (
            job_id,
            chunk_id,
        )

    def take(checks: bool) -> ChunkWork | None:
        return with_retries(
            lambda: claim(ctx, chunk_id, worker, task_id, checks=checks, queue=queue), what="claiming a chunk"
        )

    try:
        work = take(checks=True)
    except (Blocklisted, NoRoom) as refused:
        pass_on = pass_on_if_blocklisted if isinstance(refused, Blocklisted) else pass_on_for_room
        passed = pass_on(ctx, celery, job_id, chunk_id, worker)
        if passed:
            return passed
        work = take(checks=False)  # nobody else can take it
    if work is None:
        with ctx.db.session() as session:
            states.settle_cancel(session, job_id, actor=worker)
        return "skipped"
    job_id = work.job_id  # fair share may have given this task another user's chunk
    run = ChunkRun(ctx, work, worker)
    try:
        status, reason = run.run() if work.frames else (ChunkStatus.DONE, None)
    finally:
        run.cleanup()
    log.info("chunk %s/%s ended %s%s", job_id, work.index, status, f": {reason}" if reason else "")
    if status == ChunkStatus.CANCELED and reason == "chunk taken back":
        return "taken back"

    def finish() -> Ending:
        with ctx.db.session() as session:
            if reason and reason.startswith(DISK_FULL):  # shown in the monitor until the disk is back above its floor
                states.worker_health(session, worker, reason)
            ending = end_chunk(session, work, status, worker, reason)
            if ending.all_done:
                after_commit(session, lambda: send_packaging(celery, job_id, queue=work.queue))
            return ending

    ending = with_retries(finish, what="recording the chunk's end")
    if status == ChunkStatus.FAILED:
        metrics.CHUNK_FAILURES.labels(worker=worker).inc()
        retry_or_fail(ctx, celery, work, work.chunk, reason or "unknown", worker)
    if ending.none_queued and WARM.serves(job_id):  # nothing more of this job to come: free memory and disk now
        WARM.let_go(job_id)
        WARM.prepare(ctx.settings)  # and have a fresh Blender ready for the next job
    return str(status)
