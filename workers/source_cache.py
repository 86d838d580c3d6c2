"""A worker's local copy of each job's source, keyed by the upload's sha256 and shared by all chunks of all jobs
that use the same file. Workers are path-blind: the only way in is through storage.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from farm.storage import Storage, sha256_file
from farm.uploads import safe_extract


class SourceCorrupt(RuntimeError):
    pass


def _download_verified(storage: Storage, key: str, sha256: str, dest: Path) -> None:
    storage.get_file(key, dest)
    actual = sha256_file(dest)
    if actual != sha256:
        dest.unlink(missing_ok=True)
        raise SourceCorrupt(f"{key} downloaded with sha256 {actual}, expected {sha256}")


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def trim_cache(sources: Path, max_bytes: int, *, keep: Path, idle_seconds: float = 3600) -> list[Path]:
    """Delete the least recently used sources until the cache fits in `max_bytes`; never `keep`, nor one used in
    the last `idle_seconds` (a chunk may still be rendering from it). Returns what was deleted."""
    entries = sorted((p for p in sources.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    sizes = {p: _size(p) for p in entries}
    total = sum(sizes.values())
    removed = []
    for path in entries:
        if total <= max_bytes:
            break
        if path == keep or time.time() - path.stat().st_mtime < idle_seconds:
            continue
        shutil.rmtree(path, ignore_errors=True)
        total -= sizes[path]
        removed.append(path)
    return removed


def local_blend(
    storage: Storage, cache_dir: Path, *, key: str, sha256: str, kind: str, main: str | None, max_bytes: int
) -> Path:
    """The path of the .blend to open, downloading (and unpacking a zip project) only on first use."""
    root = cache_dir / "sources" / sha256
    fresh = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    if kind == "blend":
        blend = root / "scene.blend"
        if not blend.is_file():
            _download_verified(storage, key, sha256, blend)
    else:
        project = root / "project"
        if not project.is_dir():
            archive = root / "source.zip"
            if not archive.is_file():
                _download_verified(storage, key, sha256, archive)
            staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=root))
            try:
                safe_extract(archive, staging)
                os.rename(staging, project)
            except OSError:
                if not project.is_dir():  # another process did not win the race either
                    raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            archive.unlink(missing_ok=True)
        blend = project / (main or "")
        if not blend.is_file():
            raise SourceCorrupt(f"the project has no {main!r}")
    os.utime(root)  # recency, for cache clean-up
    if fresh:
        trim_cache(root.parent, max_bytes, keep=root)
    return blend
