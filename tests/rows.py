"""Jobs written straight into the database, as submission and workers would leave them, for tests of what the web
app shows (pages, the live stream) without running Blender."""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from farm.db import Database
from farm.jobs import planning, states
from farm.models import Chunk, Job
from farm.storage import Storage


def add_job(session: Session, frames: int, chunk_size: int, *, name: str = "live", queue: str = "farm") -> str:
    """A job with its chunk rows, as submission would create them (no Blender needed; frame rows come with a claim,
    or `render_frame`); returns its id."""
    job_id = str(uuid.uuid4())
    session.add(
        Job(
            id=job_id,
            name=name,
            source_key="uploads/x.blend",
            source_sha256="0" * 64,
            source_kind="blend",
            frame_start=1,
            frame_end=frames,
            chunk_size=chunk_size,
            output_format="PNG",
            device="CPU",
            resolution_x=64,
            resolution_y=36,
            queue=queue,
        )
    )
    session.flush()
    plan = planning.plan_chunks(1, frames, chunk_size)
    session.execute(
        insert(Chunk),
        [{"job_id": job_id, "index": i, "frame_start": s, "frame_end": e} for i, (s, e) in enumerate(plan)],
    )
    return job_id


def claimed_rows(session: Session, job_id: str, frame: int) -> None:
    """The frame rows of the chunk holding `frame`, as its claim makes them."""
    job = session.get(Job, job_id)
    assert job is not None
    index = session.scalars(
        select(Chunk.index).where(Chunk.job_id == job_id, Chunk.frame_start <= frame, Chunk.frame_end >= frame)
    ).one()
    states.make_frame_rows(session, job, index)


def make_job(database: Any, frames: int, chunk_size: int, name: str = "live") -> str:
    with database.session() as session:
        return add_job(session, frames, chunk_size, name=name)


def render_frame(database: Any, job_id: str, frame: int, worker: str = "w@test") -> None:
    with database.session() as session:
        claimed_rows(session, job_id, frame)
        states.frame_done(
            session,
            job_id,
            frame,
            worker=worker,
            render_time_ms=100.0 + frame,
            device="CPU",
            image_key=f"jobs/{job_id}/frames/{frame:04d}-x.png",
            sha256="0" * 64,
            size=1,
        )


def claim_first_chunk(database: Any, job_id: str, worker: str = "w@test") -> None:
    with database.session() as session:
        chunk = session.query(Chunk).filter_by(job_id=job_id, index=0).one()
        assert states.claim_chunk(session, chunk.id, worker, "task-1") is not None


def store_frames(storage: Storage, database: Database, job_id: str, frames: int) -> dict[int, tuple[bytes, str]]:
    """Each of the job's frames 1..`frames` stored (random bytes) and recorded DONE as a worker records it: per frame,
    its bytes and storage key."""
    stored = {}
    for frame in range(1, frames + 1):
        data = os.urandom(3000 + frame)
        sha256 = hashlib.sha256(data).hexdigest()
        key = f"jobs/{job_id}/frames/{frame:04d}-{sha256[:16]}.png"
        storage.put_bytes(key, data, "image/png")
        with database.session() as session:
            claimed_rows(session, job_id, frame)
            assert states.frame_done(
                session, job_id, frame, worker="w@test", render_time_ms=5.0, device="CPU", image_key=key,
                sha256=sha256, size=len(data),
            )  # fmt: skip
        stored[frame] = (data, key)
    return stored
