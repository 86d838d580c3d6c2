"""The frames this machine rendered, kept on its disk by sha256 until their job is packaged. A packager on the same
machine (every packager, on a one-machine farm) zips them from disk instead of downloading again what was just
uploaded; frames from other machines still come from storage. Copies are named by their content, so a copy is
checked against the sha256 the database recorded before it is used, and a bad one is dropped, not trusted.

The cache holds at most `max_bytes` on disk (FARM_FRAME_CACHE_GB; 0 keeps nothing): the oldest copies go first. It
is trimmed each time an eighth of that has been added, not on every frame, so keeping a frame costs one rename.
Below the machine's free-space floor (workers/disk.py) it is emptied first, oldest copies first.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from farm.storage import making_folder

BLOCK = 4096


def _on_disk(size: int) -> int:
    """What a file takes on disk, counted in whole blocks: a million tiny frames are not 'nothing'."""
    return max(1, -(-size // BLOCK)) * BLOCK


class FrameCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root, self.max_bytes = root, max_bytes
        self.added = 0  # bytes kept by this process since its last trim

    def keep(self, path: Path, sha256: str, size: int) -> None:
        """Move the stored frame at `path` into the cache (or delete it, with the cache off)."""
        if self.max_bytes <= 0:
            path.unlink(missing_ok=True)
            return
        making_folder(lambda: os.replace(path, self.root / sha256), self.root, source=path)
        self.added += _on_disk(size)
        if self.added * 8 >= self.max_bytes:
            self.trim()

    def open(self, sha256: str) -> IO[bytes] | None:
        """The kept copy, open for reading, or None. An open copy stays readable if another process drops it."""
        try:
            return open(self.root / sha256, "rb")
        except FileNotFoundError:
            return None

    def drop(self, sha256s: Iterable[str]) -> None:
        for sha256 in sha256s:
            (self.root / sha256).unlink(missing_ok=True)

    def trim(self) -> None:
        """Delete the oldest copies until the cache fits in `max_bytes` (other processes may trim at once)."""
        self.added = 0
        entries = self._entries()
        self._drop_oldest(entries, sum(size for _, size, _ in entries) - self.max_bytes)

    def evict(self, wanted: int) -> int:
        """Delete the oldest copies until `wanted` bytes are freed (the disk is under its floor: every copy is in
        storage anyway); the bytes freed."""
        return self._drop_oldest(self._entries(), wanted)

    def _entries(self) -> list[tuple[float, int, str]]:
        entries = []
        with contextlib.suppress(FileNotFoundError), os.scandir(self.root) as found:
            for entry in found:
                with contextlib.suppress(FileNotFoundError):
                    stat = entry.stat()
                    entries.append((stat.st_mtime, _on_disk(stat.st_size), entry.path))
        return entries

    @staticmethod
    def _drop_oldest(entries: list[tuple[float, int, str]], wanted: int) -> int:
        freed = 0
        for _, size, path in sorted(entries):
            if freed >= wanted:
                break
            Path(path).unlink(missing_ok=True)
            freed += size
        return freed
