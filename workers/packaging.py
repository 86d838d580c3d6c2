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
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from sqlalchemy import func, select

from farm.jobs import planning, states
from farm.models import Frame, Job, JobStatus
from workers.context import WorkerContext
from workers.frame_fetch import COPY_BLOCK, done_frames, fetched
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


def build_zip(ctx: WorkerContext, job: Job, dest: IO[bytes]) -> int:
    """Write the job's zip to the stream `dest` (it need not seek); returns the number of frames in it. Zip64
    throughout (each entry, and the archive once it holds more than 65,535 entries or 4 GiB), so a zip of a million
    frames is as valid as one of ten. `manifest.json` is written to a temporary file as the frames go in, then
    added last: nothing per frame is held in memory."""
    ext = planning.EXTENSIONS[job.output_format]
    scratch = ctx.settings.cache_dir / "zips"
    scratch.mkdir(parents=True, exist_ok=True)
    rows = done_frames(ctx, job.id, Frame.render_time_ms, Frame.worker, Frame.device)
    count = 0
    with (
        zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive,
        tempfile.TemporaryFile(dir=scratch) as listing,
    ):
        head = {
            "job": job.id,
            "name": job.name,
            "frame_start": job.frame_start,
            "frame_end": job.frame_end,
            "output_format": job.output_format,
        }
        listing.write(json.dumps(head, indent=2).removesuffix("\n}").encode() + b',\n  "frames": [')
        for (frame, _key, sha256, render_ms, worker, device), src in fetched(ctx, rows, scratch):
            name = planning.frame_filename(frame, ext, job.frame_end)
            with archive.open(_entry(name), "w", force_zip64=True) as out:
                shutil.copyfileobj(src, out, COPY_BLOCK)
            entry = {"frame": frame, "file": name, "render_time": render_ms, "worker": worker, "device": device}
            listing.write((",\n    " if count else "\n    ").encode() + json.dumps(entry | {"sha256": sha256}).encode())
            count += 1
        listing.write(b"\n  ]\n}")
        listing.seek(0)
        with archive.open(_entry("manifest.json"), "w", force_zip64=True) as out:
            shutil.copyfileobj(listing, out, COPY_BLOCK)
    return count


def _entry(name: str) -> zipfile.ZipInfo:
    return zipfile.ZipInfo(name, date_time=time.localtime()[:6])


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
                    reason=f"zip of {zipped} frames built",
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
    # They are in the zip (and in storage): this machine needs its copies no more.
    ctx.frames.drop(row.sha256 for row in done_frames(ctx, job_id))
    log.info("job %s packaged: %s (%d bytes)", job_id, key, size)
    return "completed"
