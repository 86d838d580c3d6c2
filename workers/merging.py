"""Merge a split still's parts into its frame: the packager's first step for a job with `split` > 1, once every part
is stored. The frame is then stored and recorded as a renderer stores one, and packaging goes on as for any job.

The parts are the farm's own files: each is fetched from storage by the key its chunk recorded and checked against
the sha256 recorded with it; Blender (farm/blender/scripts/merge_parts.py) opens no .blend and runs under the frame
timeout. Each chunk holds one part, the one its last attempt stored, so a part rendered twice counts once. A merge
that dies is done again by the next packaging attempt; one recorded already is not.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import select

from farm.blender.launcher import SCRIPTS, run_script
from farm.jobs import planning, splitting, states
from farm.models import Chunk, Frame, FrameStatus, Job
from farm.retrying import with_retries
from farm.storage import regular_file, sha256_file
from farm.storage.previews import store_thumbnail
from workers.context import WorkerContext

log = logging.getLogger(__name__)
MERGE_SCRIPT = SCRIPTS / "merge_parts.py"


class MergeFailed(RuntimeError):
    """A split still cannot be merged: a part is not recorded, not the file recorded, or Blender wrote nothing."""


def merge_spec(job: Job, parts: list[dict[str, Any]], paths: list[Path], out: Path) -> dict[str, Any]:
    """What merge_parts.py needs: each part's file and its weight (samples) or its rows (tiles), the still's size,
    format and the scene's output settings."""
    width, height = splitting.frame_size(job.resolution_x or 0, job.resolution_y or 0, job.resolution_percentage or 100)
    shares = [
        splitting.part_spec(engine=job.engine, samples=job.samples, size=(width, height), parts=job.split, index=i)
        for i in range(job.split)
    ]
    entries = []
    for share, path in zip(shares, paths, strict=True):
        entry: dict[str, Any] = {"path": str(path)}
        if share["mode"] == splitting.SAMPLES:
            entry["weight"] = share["sample_length"] / share["samples"]
        else:
            entry["rows"], entry["keep"] = share["rows"], share["keep"]
        entries.append(entry)
    return {
        "mode": splitting.mode_for(job.engine),
        "width": width,
        "height": height,
        "parts": entries,
        "recipe": parts[0].get("recipe") or {},
        "output_format": job.output_format,
        "out": str(out),
    }


def merge_parts(ctx: WorkerContext, job: Job, actor: str) -> None:
    """Merge, store and record the still of a split job, unless it is recorded already."""
    with ctx.db.session() as session:
        status = session.scalar(select(Frame.status).where(Frame.job_id == job.id, Frame.frame == job.frame_start))
        parts = list(session.scalars(select(Chunk.part).where(Chunk.job_id == job.id).order_by(Chunk.index)))
    if status == FrameStatus.DONE:
        return
    if len(parts) != job.split or any(part is None for part in parts):
        raise MergeFailed(f"{sum(p is not None for p in parts)} of {job.split} parts are stored")
    scratch = ctx.settings.cache_dir / "merge" / f"{job.id}-{secrets.token_hex(4)}"
    scratch.mkdir(parents=True)
    try:
        paths = []
        for index, part in enumerate(parts):
            path = scratch / f"part-{index:02d}.exr"
            fetch(ctx, part["key"], path)
            if sha256_file(path) != part["sha256"]:
                raise MergeFailed(f"part {index} is not the file its renderer recorded (sha256 differs)")
            paths.append(path)
        ext = planning.EXTENSIONS[job.output_format]
        spec = merge_spec(job, parts, paths, scratch / "merged")
        run_script(ctx.settings, MERGE_SCRIPT, [json.dumps(spec)], timeout=ctx.settings.frame_timeout_seconds)
        image = scratch / f"merged.{ext}"
        if not regular_file(image):
            raise MergeFailed("Blender merged the parts but wrote no image")
        record_frame(ctx, job, image, ms=sum(float(part.get("ms") or 0) for part in parts), actor=actor)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for part in parts:  # merged into the frame: the parts are not needed any more (best effort)
        try:
            ctx.storage.delete(part["key"])
        except Exception as exc:
            log.warning("could not delete a part of job %s: %s", job.id, exc)


def fetch(ctx: WorkerContext, key: str, path: Path) -> None:
    with_retries(lambda: ctx.storage.get_file(key, path), what=f"fetching {key}")


def record_frame(ctx: WorkerContext, job: Job, image: Path, *, ms: float, actor: str) -> None:
    """Store the merged still as its frame and record it DONE, its render time the parts' together; a merge that
    raced another (two packaging attempts) keeps the one recorded first."""
    ext = planning.EXTENSIONS[job.output_format]
    sha256, size = sha256_file(image), image.stat().st_size
    key = planning.frame_key(job.id, job.frame_start, ext, job.frame_end, sha256)
    with_retries(lambda: ctx.storage.put_file(key, image, planning.CONTENT_TYPES[ext]), what="storing the still")
    store_thumbnail(ctx.storage, key, image)

    def record() -> bool:
        with ctx.db.session() as session:
            return states.frame_done(
                session,
                job.id,
                job.frame_start,
                worker=actor,
                render_time_ms=ms,
                device=f"{job.split} parts merged",
                image_key=key,
                sha256=sha256,
                size=size,
            )

    if with_retries(record, what="recording the still"):
        ctx.frames.keep(image, sha256, size)  # for the zip, next
