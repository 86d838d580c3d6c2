"""Package a finished job: stream every frame from storage into one zip that streams straight back into storage
(an S3 multipart upload whose parts go up while the next frames come down), check each frame against the sha256
recorded when it was stored, and add `manifest.json`. Frames this machine rendered are read from its frame cache
instead of downloaded. Memory stays flat however many frames there are: a few frames are fetched ahead to disk, a few
parts are in flight.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from sqlalchemy import func, select

from farm.jobs import planning, states
from farm.models import Frame, FrameStatus, Job, JobStatus
from workers.context import WorkerContext
from workers.frame_fetch import COPY_BLOCK, fetched
from workers.merging import merge_parts
from workers.movie import make_movie

log = logging.getLogger(__name__)


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
        # A split still is ready when its parts are all rendered: its frame is made from them next.
        waiting = states.chunks_left(session, job_id) if job.split > 1 else job.frames_rendered < job.frames_to_render
        if waiting:
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
    """PACKAGING → UPLOADING → (the preview movie) → COMPLETED; returns what happened, for the task's result.
    `resume` picks up a job
    left in PACKAGING or UPLOADING by a packager that failed or died, as a new attempt; `retried` goes on with an
    attempt that Celery retried after an outage."""
    job = start_packaging(ctx, job_id, actor, resume=resume, retried=retried)
    if job is None:
        return "not ready"
    if job.split > 1:  # a split still: its parts become its frame first
        with packaging_lease(ctx, job_id):
            merge_parts(ctx, job, actor)
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
    with packaging_lease(ctx, job_id):  # from the same frames, before this machine lets go of its copies
        movie = make_movie(ctx, job)
    with ctx.db.session() as session:
        states.complete_job(
            session, job_id, asset_key=key, asset_filename=filename, asset_size=size, actor=actor, movie=movie
        )
    ctx.frames.drop(zipped)  # they are in the zip (and in storage): this machine needs its copies no more
    log.info("job %s packaged: %s (%d bytes)", job_id, key, size)
    return "completed"
