"""Package a finished job: stream every frame from storage into one zip that streams straight back into storage
(an S3 multipart upload whose parts go up while the next frames come down), check each frame against the sha256
recorded when it was stored, and add `manifest.json`. Frames this machine rendered are read from its frame cache
instead of downloaded. Memory stays flat however many frames there are: a few frames are fetched ahead to disk, a few
parts are in flight.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import threading
import time
import zipfile
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Row, func, select

from farm.jobs import planning, states
from farm.models import Frame, FrameStatus, Job, JobStatus
from workers.context import WorkerContext

log = logging.getLogger(__name__)
COPY_BLOCK = 1024 * 1024
PREFETCH = 4  # frames downloaded ahead of the zip writer


class Unpackable(RuntimeError):
    """A frame that can never be zipped (missing from storage, or not the bytes that were rendered): no later
    attempt could do better, so the job fails at once."""


class NoLongerPackaging(Exception):
    """Someone else finished or canceled the job while this packager built its zip."""


def start_packaging(ctx: WorkerContext, job_id: str, actor: str, *, resume: bool, retried: bool) -> Job | None:
    """Move the job to PACKAGING if every frame is done; None if it is not ready or someone else has it. `resume`
    begins another attempt for a job a packager left in PACKAGING or UPLOADING, counted against
    FARM_PACKAGING_ATTEMPTS; `retried` goes on with this same attempt after Celery waited out an outage."""
    with ctx.db.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            return None
        if retried and job.status in states.PACKAGING_NOW:
            return job
        if resume:
            restarted = states.restart_packaging(session, job_id, attempts=ctx.settings.packaging_attempts, actor=actor)
            return job if restarted else None
        if job.frames_rendered < job.frames_to_render:
            return None  # chunks still render or retry; the last one to finish sends packaging again
        if not states.move_job(
            session,
            job_id,
            JobStatus.PACKAGING,
            reason="all frames rendered",
            actor=actor,
            only_from=[JobStatus.QUEUED, JobStatus.RENDERING],
        ):
            return None
        return job


def _sha256(src: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while block := src.read(COPY_BLOCK):
        digest.update(block)
    src.seek(0)
    return digest.hexdigest()


def fetched(ctx: WorkerContext, frames: Sequence[Row[Any]], folder: Path) -> Iterator[tuple[Row[Any], IO[bytes]]]:
    """Each frame row with its image open for reading and checked against the sha256 recorded when it was stored,
    in order. A copy this machine kept when it rendered the frame is used as it is; the others are downloaded.
    PREFETCH frames are fetched and checked ahead of the zip writer, on threads (hashing and downloads overlap the
    zip's upload), so only PREFETCH copies are ever open."""
    scratch = Path(tempfile.mkdtemp(prefix="frames-", dir=folder))

    def fetch(index: int) -> IO[bytes]:
        frame, key, sha256 = frames[index][:3]
        kept = ctx.frames.open(sha256)
        if kept is not None:
            if _sha256(kept) == sha256:
                return kept
            kept.close()
            ctx.frames.drop([sha256])
        path = scratch / str(index)
        try:
            ctx.storage.get_file(key, path)
        except FileNotFoundError:
            raise Unpackable(f"frame {frame} is missing from storage ({key})") from None
        with ExitStack() as closing:  # closed if it does not check out
            src = closing.enter_context(open(path, "rb"))
            path.unlink()  # the open file outlives its name: nothing is left on disk once it is closed
            if _sha256(src) != sha256:
                raise Unpackable(f"frame {frame} in storage does not match its recorded sha256")
            closing.pop_all()
        return src

    pool = ThreadPoolExecutor(PREFETCH, thread_name_prefix="frame-fetch")
    pending = deque(pool.submit(fetch, i) for i in range(min(PREFETCH, len(frames))))
    try:
        for index, row in enumerate(frames):
            src = pending.popleft().result()
            if index + PREFETCH < len(frames):
                pending.append(pool.submit(fetch, index + PREFETCH))
            with src:
                yield row, src
    finally:
        # Fetches still running are not waited for: a download stalled on a hung storage must not hold up the end
        # of an attempt that failed or hit its soft time limit. Each copy is closed whenever its fetch ends.
        for future in pending:
            future.add_done_callback(_close_fetched)
        pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _close_fetched(future: Future[IO[bytes]]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


def build_zip(ctx: WorkerContext, job: Job, dest: IO[bytes]) -> list[str]:
    """Write the job's zip to the stream `dest` (it need not seek); returns the sha256 of each frame in it."""
    with ctx.db.session() as session:
        frames = session.execute(
            select(Frame.frame, Frame.image_key, Frame.sha256, Frame.render_time_ms, Frame.worker, Frame.device)
            .where(Frame.job_id == job.id, Frame.status == FrameStatus.DONE)
            .order_by(Frame.frame)
        ).all()
    manifest = []
    ext = planning.EXTENSIONS[job.output_format]
    scratch = ctx.settings.cache_dir / "zips"
    scratch.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for (frame, _key, sha256, render_ms, worker, device), src in fetched(ctx, frames, scratch):
            name = planning.frame_filename(frame, ext, job.frame_end)
            entry = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
            with archive.open(entry, "w", force_zip64=True) as out:
                shutil.copyfileobj(src, out, COPY_BLOCK)
            manifest.append(
                {
                    "frame": frame,
                    "file": name,
                    "render_time": render_ms,
                    "worker": worker,
                    "device": device,
                    "sha256": sha256,
                }
            )
        archive.writestr(
            "manifest.json",
            json.dumps(
                {
                    "job": job.id,
                    "name": job.name,
                    "frame_start": job.frame_start,
                    "frame_end": job.frame_end,
                    "output_format": job.output_format,
                    "frames": manifest,
                },
                indent=2,
            ),
        )
    return [frame["sha256"] for frame in manifest]


@contextmanager
def packaging_lease(ctx: WorkerContext, job_id: str) -> Iterator[None]:
    """Touch the job while packaging runs, so the janitor can tell a slow packager from a dead one."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(ctx.settings.heartbeat_seconds):
            try:
                with ctx.db.session() as session:
                    states.touch_job(session, job_id)
            except Exception:  # an outage: the packager itself will wait it out or fail and retry
                log.warning("could not renew the packaging lease of job %s", job_id, exc_info=True)

    thread = threading.Thread(target=beat, name="packaging-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def package_job(ctx: WorkerContext, job_id: str, *, actor: str, resume: bool = False, retried: bool = False) -> str:
    """PACKAGING → UPLOADING → COMPLETED; returns what happened, for the task's result. `resume` picks up a job
    left in PACKAGING or UPLOADING by a packager that failed or died, as a new attempt; `retried` goes on with an
    attempt that Celery retried after an outage."""
    job = start_packaging(ctx, job_id, actor, resume=resume, retried=retried)
    if job is None:
        return "not ready"
    filename = planning.zip_filename(job.name, job.frame_start, job.frame_end)
    key = f"jobs/{job.id}/{filename}"
    with ctx.db.session() as session:
        expected = session.scalar(select(func.sum(Frame.size)).where(Frame.job_id == job.id)) or 0
    try:
        # The zip streams into storage as it is built (S3: a multipart upload), overlapping downloads and uploads.
        with packaging_lease(ctx, job_id), ctx.storage.writer(key, "application/zip", size_hint=expected) as out:
            zipped = build_zip(ctx, job, out)
            with ctx.db.session() as session:
                moved = states.move_job(
                    session,
                    job_id,
                    JobStatus.UPLOADING,
                    actor=actor,
                    reason=f"zip of {len(zipped)} frames built",
                    only_from=[JobStatus.PACKAGING],
                )
            if not moved and not (resume or retried):
                raise NoLongerPackaging  # the upload is abandoned, not completed
    except NoLongerPackaging:
        return "no longer packaging"
    size = out.written
    with ctx.db.session() as session:
        states.complete_job(session, job_id, asset_key=key, asset_filename=filename, asset_size=size, actor=actor)
    ctx.frames.drop(zipped)  # they are in the zip (and in storage): this machine needs its copies no more
    log.info("job %s packaged: %s (%d bytes)", job_id, key, size)
    return "completed"
