"""A frame Pillow will not make a thumbnail of is still a frame: stored and recorded by the worker's own code (real
Postgres and moto S3), without a thumbnail, with a warning in the log."""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

from sqlalchemy import select

from farm.config import Settings
from farm.db import Database
from farm.models import Chunk, Frame, FrameStatus
from farm.storage import open_storage
from farm.storage.previews import thumbnail_key
from tests.rows import make_job
from workers import rendering
from workers.context import WorkerContext
from workers.frame_cache import FrameCache


def one_colour_png(path: Path, width: int, height: int) -> Path:
    """A real 1-bit greyscale PNG of one colour: 20000×20000 pixels take a few hundred KiB on disk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes((width + 7) // 8)  # filter byte, then black pixels
    packer = zlib.compressobj(9)
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    return path


def test_a_frame_too_large_for_a_thumbnail_is_stored_and_recorded_without_one(
    prod_settings: Settings, database: Database, tmp_path: Path, caplog
):
    storage = open_storage(prod_settings)
    storage.ensure_ready()
    ctx = WorkerContext(prod_settings, database, storage, devices=[], frames=FrameCache(tmp_path / "kept", 2**30))
    job_id = make_job(database, 1, 1, name="huge")
    with database.session() as session:
        chunk_id = session.scalars(select(Chunk.id).where(Chunk.job_id == job_id)).one()
    work = rendering.claim(ctx, chunk_id, "w@test", "task-1", checks=False)
    assert work is not None
    image = one_colour_png(tmp_path / "0001.png", 20000, 20000)  # 400 Mpixels: over twice Image.MAX_IMAGE_PIXELS

    with caplog.at_level(logging.WARNING, logger="farm.storage.previews"):
        rendering.ChunkRun(ctx, work, "w@test").store_frame(1, image, 1234.0)

    with database.session() as session:
        frame = session.scalars(select(Frame).where(Frame.job_id == job_id)).one()
    assert frame.status == FrameStatus.DONE and frame.size == len(storage.read_bytes(frame.image_key))
    assert not storage.exists(thumbnail_key(frame.image_key))
    assert "no thumbnail for 0001.png: DecompressionBombError" in caplog.text
