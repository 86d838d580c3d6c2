"""A worker's disk: what a chunk's failure says when the disk filled, the free-space floor (FARM_MIN_FREE_GB) kept
by evicting what can be fetched again, and whether a chunk's frames fit before it is taken.

What can go, in order: the frame cache (every frame in it is in storage already; a packager only downloads what it
no longer finds), then cached project files that no project folder links and no job used for a minute (fetched
again from storage when needed).
"""

from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path

from farm.errors import FULL_ERRNOS
from farm.projects import BlobCache
from workers.frame_cache import FrameCache

log = logging.getLogger(__name__)
DISK_FULL = "worker disk full"
NEARLY_FULL = 2**20  # below this much free space, a failed write is taken for a full disk
BLOB_IDLE_SECONDS = 60.0  # a blob used more recently may be about to be linked into a project


def free_bytes(path: Path) -> int:
    path.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(path).free


def failure_reason(exc: BaseException) -> str:
    """A chunk's reason for an exception in its worker: a full disk says so first, anything else names itself."""
    if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
        return f"{DISK_FULL}: {exc}"
    return f"{type(exc).__name__}: {exc}"[:2000]


def blame_disk(reason: str, cache_dir: Path) -> str:
    """Blender reports a write it could not finish in its own words (or as a missing image): when the disk under
    the cache is full, that is the reason to give, so the retry goes elsewhere and the monitor says why."""
    if reason.startswith(DISK_FULL):
        return reason
    if "No space left on device" in reason or free_bytes(cache_dir) < NEARLY_FULL:
        return f"{DISK_FULL}: {reason}"
    return reason


def refuse_if_full(path: Path, what: str) -> None:
    """Raise ENOSPC when the disk under `path` is (nearly) full: Blender may have written `what` cut short (it
    reports a frame once the file exists), and a truncated image must never be stored as the frame."""
    if free_bytes(path) < NEARLY_FULL:
        raise OSError(errno.ENOSPC, f"No space left on device; {what} may be cut short", str(path))


def make_room(cache_dir: Path, frames: FrameCache, floor: int) -> int:
    """Evict until `floor` bytes are free under the cache (frame cache first, then idle project files); the free
    bytes left, which may still be under the floor."""
    free = free_bytes(cache_dir)
    if free >= floor:
        return free
    dropped = frames.evict(floor - free)
    free = free_bytes(cache_dir)
    if free < floor:
        BlobCache(cache_dir).trim(0, idle_seconds=BLOB_IDLE_SECONDS)
        free = free_bytes(cache_dir)
    if dropped or free < floor:
        log.warning("disk under %s: %d MiB free (floor %d MiB)", cache_dir, free >> 20, floor >> 20)
    return free


def room_for(cache_dir: Path, frames: FrameCache, floor: int, needed: int) -> bool:
    """Is there room for `needed` more bytes above the floor, after evicting what may go?"""
    return make_room(cache_dir, frames, floor + needed) >= floor + needed
