"""The frame cache: a worker keeps the frames it rendered, and a packager on its machine zips those copies instead of
downloading them; a copy that does not match its recorded sha256 is dropped, never zipped. Real S3 (moto server) and
Postgres."""

from __future__ import annotations

import hashlib
import io
import os
import time
import zipfile
from pathlib import Path

import pytest

from farm.config import Settings
from farm.db import Database
from farm.models import Job, JobStatus
from farm.storage import open_storage
from tests.rows import make_job, store_frames
from workers.context import WorkerContext
from workers.frame_cache import BLOCK, FrameCache
from workers.frame_fetch import Unpackable
from workers.packaging import package_job


def write(path: Path, data: bytes, age: float = 0) -> Path:
    path.write_bytes(data)
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_keep_moves_the_frame_in_and_open_reads_it(tmp_path):
    cache = FrameCache(tmp_path / "frames", 2**20)
    cache.keep(write(tmp_path / "0001.png", b"pixels"), "a" * 64, 6)
    assert not (tmp_path / "0001.png").exists()
    with cache.open("a" * 64) as kept:
        assert kept.read() == b"pixels"
    assert cache.open("b" * 64) is None
    cache.drop(["a" * 64, "b" * 64])
    assert cache.open("a" * 64) is None


def test_a_cache_of_size_zero_keeps_nothing(tmp_path):
    cache = FrameCache(tmp_path / "frames", 0)
    cache.keep(write(tmp_path / "0001.png", b"pixels"), "a" * 64, 6)
    assert not (tmp_path / "0001.png").exists() and not (tmp_path / "frames").exists()


def test_the_oldest_copies_go_first_once_an_eighth_of_the_cache_was_added(tmp_path):
    cache = FrameCache(tmp_path / "frames", 16 * BLOCK)
    for n, age in enumerate((300, 200, 100)):  # 6 blocks each, over an eighth: each keep trims
        cache.keep(write(tmp_path / "f", bytes(6 * BLOCK), age), f"{n}" * 64, 6 * BLOCK)
    assert sorted(p.name[0] for p in (tmp_path / "frames").iterdir()) == ["1", "2"]  # 18 blocks: the oldest went
    small = FrameCache(tmp_path / "frames", 16 * BLOCK)
    small.keep(write(tmp_path / "f", b"x"), "9" * 64, 1)  # a tiny frame counts as the block it takes on disk
    assert small.added == BLOCK and len(list((tmp_path / "frames").iterdir())) == 3  # under an eighth: no trim
    small.keep(write(tmp_path / "f", bytes(4 * BLOCK)), "8" * 64, 4 * BLOCK)  # 17 blocks in all: the oldest goes
    assert sorted(p.name[0] for p in (tmp_path / "frames").iterdir()) == ["2", "8", "9"] and small.added == 0


@pytest.fixture()
def packager(prod_settings: Settings, database: Database, tmp_path: Path) -> WorkerContext:
    storage = open_storage(prod_settings)
    storage.ensure_ready()
    return WorkerContext(prod_settings, database, storage, devices=[], frames=FrameCache(tmp_path / "kept", 2**30))


def rendered_job(ctx: WorkerContext, frames: int) -> tuple[str, dict[int, bytes], dict[int, str]]:
    """A job whose frames are all stored and recorded; returns its id, each frame's bytes and its storage key."""
    job_id = make_job(ctx.db, frames, chunk_size=frames, name="kept")
    stored = store_frames(ctx.storage, ctx.db, job_id, frames)
    return job_id, {f: data for f, (data, _) in stored.items()}, {f: key for f, (_, key) in stored.items()}


def zipped(ctx: WorkerContext, job_id: str) -> dict[str, bytes]:
    with ctx.db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == JobStatus.COMPLETED
        key = job.asset_key
    archive = zipfile.ZipFile(io.BytesIO(ctx.storage.read_bytes(key)))
    return {name: archive.read(name) for name in archive.namelist() if name != "manifest.json"}


def test_the_packager_zips_the_copies_this_machine_kept(packager, tmp_path):
    job_id, images, keys = rendered_job(packager, 3)
    for frame, data in images.items():
        packager.frames.keep(write(tmp_path / "f", data), hashlib.sha256(data).hexdigest(), len(data))
        packager.storage.delete(keys[frame])  # so only the kept copies can make the zip
    assert package_job(packager, job_id, actor="test") == "completed"
    assert zipped(packager, job_id) == {f"{frame:04d}.png": data for frame, data in images.items()}
    assert not list((tmp_path / "kept").iterdir())  # zipped, so dropped


def test_a_kept_copy_that_does_not_match_is_dropped_and_the_frame_downloaded(packager, tmp_path):
    job_id, images, _ = rendered_job(packager, 2)
    sha256 = hashlib.sha256(images[2]).hexdigest()
    packager.frames.keep(write(tmp_path / "f", b"rotten bytes"), sha256, 12)
    assert package_job(packager, job_id, actor="test") == "completed"
    assert zipped(packager, job_id) == {"0001.png": images[1], "0002.png": images[2]}
    assert packager.frames.open(sha256) is None


def test_a_stored_frame_that_does_not_match_fails_packaging_and_stores_no_zip(packager):
    job_id, _, keys = rendered_job(packager, 3)
    packager.storage.put_bytes(keys[2], b"not the rendered frame")
    with pytest.raises(Unpackable, match="frame 2 in storage does not match"):
        package_job(packager, job_id, actor="test")
    with packager.db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == JobStatus.PACKAGING and job.asset_key is None
    assert not packager.storage.exists(f"jobs/{job_id}/kept-0001-0003.zip")
