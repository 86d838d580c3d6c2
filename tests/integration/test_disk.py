"""Disks that fill for real (a tmpfs per test): a worker's floor evicts its frame cache, then idle project files, and
says when a chunk does not fit; the web host answers 507 `insufficient_storage` instead of failing obscurely."""

from __future__ import annotations

import dataclasses
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from farm.config import Settings
from farm.projects import Blob, BlobCache
from farm.storage import sha256_file
from tests.helpers import signed_in
from tests.servers import SmallDisk
from workers.disk import DISK_FULL, blame_disk, failure_reason, make_room, refuse_if_full, room_for
from workers.frame_cache import FrameCache

MIB = 2**20


@pytest.fixture()
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    small = SmallDisk(tmp_path / "disk", 16)
    yield small
    small.close()


def put(path: Path, mib: int, age: float = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(mib * MIB))
    when = time.time() - age
    os.utime(path, (when, when))
    return path


def cached_blob(cache: Path, mib: int) -> Path:
    """A project file in the machine's blob cache, last used an hour ago."""
    source = put(cache / "incoming", mib)
    path = BlobCache(cache).adopt(source, Blob(sha256_file(source), source.stat().st_size))
    source.unlink()
    os.utime(path, ns=(time.time_ns() - 3600 * 10**9, 0))
    return path


def test_below_the_floor_the_frame_cache_goes_first_then_idle_project_files(disk: SmallDisk):
    cache = disk.path
    frames = FrameCache(cache / "frames", max_bytes=10 * 2**30)
    oldest, newer = put(cache / "frames" / "a", 3, age=20), put(cache / "frames" / "b", 3, age=10)
    idle, in_use = cached_blob(cache, 3), cached_blob(cache, 3)
    (cache / "projects" / "job-1").mkdir(parents=True)
    os.link(in_use, cache / "projects" / "job-1" / "scene.blend")  # a job's project folder uses it
    free = disk.free()
    assert make_room(cache, frames, floor=free) == free  # above the floor: nothing goes
    assert make_room(cache, frames, floor=free + MIB) >= free + MIB  # the oldest frame is enough
    assert not oldest.exists() and newer.exists() and idle.exists()
    floor = disk.free() + 5 * MIB  # more than the frame cache holds: idle project files go too, never one in use
    assert make_room(cache, frames, floor) >= floor
    assert not newer.exists() and not idle.exists() and in_use.exists()
    assert not room_for(cache, frames, floor=MIB, needed=disk.free())  # what cannot be made room for
    assert room_for(cache, frames, floor=MIB, needed=MIB)


def test_a_full_disk_is_named_as_the_reason(disk: SmallDisk):
    disk.fill()
    with pytest.raises(OSError) as raised:
        (disk.path / "log").write_text("x" * 2**16)
    assert failure_reason(raised.value).startswith(f"{DISK_FULL}: [Errno 28]")
    with pytest.raises(OSError) as refused:  # an image Blender reported now may be cut short: never stored
        refuse_if_full(disk.path, "the image of frame 7")
    assert failure_reason(refused.value).startswith(f"{DISK_FULL}: [Errno 28] No space left on device; the image")
    assert failure_reason(RecursionError("too deep")) == "RecursionError: too deep"
    # Blender's own words for a write it could not finish, or a missing image, on a disk with no room left
    assert blame_disk("Blender rendered frame 7 but wrote no image", disk.path).startswith(DISK_FULL)
    disk.drain()
    refuse_if_full(disk.path, "the image of frame 7")  # room again: nothing to refuse
    assert blame_disk("Blender rendered frame 7 but wrote no image", disk.path) == (
        "Blender rendered frame 7 but wrote no image"
    )


@pytest.fixture()
def web_client(prod_settings: Settings, database, disk: SmallDisk, admin_token: str):  # type: ignore[no-untyped-def]
    """A web app whose instance folder (staged uploads) and cache (the probe's Blender) are on the small disk."""
    from webapp import create_app
    from webapp.extensions import db

    apps = []

    def make(min_free_bytes: int):  # type: ignore[no-untyped-def]
        local = dataclasses.replace(
            prod_settings,
            instance_dir=disk.path,
            cache_dir=disk.path / "cache",
            min_free_bytes=min_free_bytes,
            probe_spare=False,
        )
        apps.append(create_app(local, {"TESTING": True}))
        return signed_in(apps[-1].test_client(), admin_token)

    yield make
    for app in apps:
        with app.app_context():
            db.engine.dispose()


def test_web_host_under_its_floor_answers_507(web_client, disk: SmallDisk):
    client = web_client(min_free_bytes=disk.free() + MIB)
    response = client.post("/api/jobs", data={"file": (io.BytesIO(b"BLENDER-v405REND"), "a.blend")})
    assert response.status_code == 507, response.data
    error = response.get_json()["error"]
    assert error["code"] == "insufficient_storage" and error["field"] == "file"
    assert "FARM_MIN_FREE_GB" in error["message"]


def test_web_host_whose_disk_fills_while_staging_answers_507(web_client, disk: SmallDisk):
    client = web_client(min_free_bytes=100 * 1024)
    disk.ballast.write_bytes(bytes(disk.free() - 300 * 1024))  # 300 KiB left, above the floor
    blend = b"BLENDER-v405REND" + os.urandom(400 * 1024)  # saving it runs out of room mid-write
    fields = {"frame_start": "1", "frame_end": "1", "file": (io.BytesIO(blend), "big.blend")}
    response = client.post("/api/jobs", data=fields)
    assert response.status_code == 507, response.data
    error = response.get_json()["error"]
    assert error["code"] == "insufficient_storage" and "disk is full" in error["message"]
    assert not list((disk.path / "tmp").iterdir())  # the partial upload was removed
