"""Each job's project on a worker: a folder of its own, made for the job from the machine's blob cache (hard links,
fetching only the blobs the machine lacks), under a random name that no other job can know or name (never a
content hash: a file's absolute path cannot reach another job's project, and no cache path or hash appears in
what users see). Blender reads the job's textures, caches and libraries from it while it renders, so it stays at
one path for all the chunks of the job this worker process renders while the job's warm Blender lives, and is
removed when the job is let go (farm/warm_blender.py). Folders of dead worker processes are swept.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from farm.blender.launcher import sweep_orphans
from farm.config import Settings
from farm.projects import BlobCache, read_manifest
from farm.storage import Storage


@dataclass(frozen=True)
class JobProject:
    job_id: str
    folder: Path
    blend: Path

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def build(settings: Settings, storage: Storage, job_id: str, manifest_sha256: str) -> JobProject:
    """Lay out the job's project in a new folder of its own; returns where its main .blend is."""
    base = settings.cache_dir / "projects"
    base.mkdir(parents=True, exist_ok=True)
    sweep_orphans(base)
    folder = base / f"job-{os.getpid()}-{secrets.token_hex(16)}"
    cache = BlobCache(settings.cache_dir)
    try:
        blend = cache.build(storage, read_manifest(storage, manifest_sha256), folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    cache.trim(settings.cache_max_bytes)
    return JobProject(job_id, folder, blend)
