"""A chunk's heartbeat comes from a thread of its own while the chunk runs (workers.rendering.ChunkRun.beat_until),
not from the loop that waits on Blender and stores frames: an upload or a fetch that takes longer than the worker
timeout must not get a rendering chunk taken back. Real Postgres, the worker's own code."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select, update

from farm.config import Settings
from farm.db import Database
from farm.models import Chunk
from farm.storage import open_storage
from tests.rows import make_job
from workers import rendering
from workers.context import WorkerContext
from workers.frame_cache import FrameCache


def heartbeat_at(database: Database, chunk_id: int):  # type: ignore[no-untyped-def]
    with database.session() as session:
        return session.scalar(select(Chunk.heartbeat_at).where(Chunk.id == chunk_id))


@pytest.mark.commits  # heartbeats are stamped with the database's clock: each beat its own transaction
def test_a_chunk_beats_while_its_loop_is_busy_and_stops_when_taken_back(
    prod_settings: Settings, database: Database, tmp_path: Path
):
    settings = dataclasses.replace(prod_settings, heartbeat_seconds=0.2)
    ctx = WorkerContext(settings, database, open_storage(settings), devices=[], frames=FrameCache(tmp_path, 2**30))
    job_id = make_job(database, 2, 2, name="beats")
    with database.session() as session:
        chunk_id = session.scalars(select(Chunk.id).where(Chunk.job_id == job_id)).one()
    work = rendering.claim(ctx, chunk_id, "w@test", "task-1", checks=False)
    assert work is not None
    run = rendering.ChunkRun(ctx, work, "w@test")
    claimed_beat = heartbeat_at(database, chunk_id)
    stop = threading.Event()
    beating = threading.Thread(target=run.beat_until, args=(stop,), daemon=True)
    beating.start()
    try:
        time.sleep(1.0)  # this thread is busy (an upload): the chunk beats all the same
        assert heartbeat_at(database, chunk_id) > claimed_beat and not run.lost
        with database.session() as session:  # the janitor gives the chunk to another attempt
            session.execute(update(Chunk).where(Chunk.id == chunk_id).values(attempts=Chunk.attempts + 1))
        deadline = time.monotonic() + 5
        while not run.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert run.lost and run.should_stop() == "chunk taken back"
    finally:
        stop.set()
        beating.join(5)
    assert not beating.is_alive()
