"""The `file://` back end: a folder on a disk every process of the farm shares (one machine, or a network mount).
Writes land under a temporary name and are renamed into place, so a reader never sees half a file."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from farm.storage import Sink, Storage, _check_key, making_folder, replacing


def _hard_link(path: str | os.PathLike, link: Path) -> bool:
    """False where `link` cannot be a hard link to `path` (another filesystem, or one without hard links)."""
    try:
        os.link(path, link)
    except FileNotFoundError:
        raise
    except OSError:
        return False
    return True


class FileStorage(Storage):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url_prefix = root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def ensure_ready(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def put_file(self, key: str, path: str | os.PathLike, content_type: str | None = None) -> None:
        """A hard link where it can be (the same filesystem): a frame is not copied, and costs no new file. Callers
        never rewrite a file they stored (frames, uploads), or only append to it (a live Blender log)."""
        target = self._path(key)
        linked = target.with_name(f".link-{uuid.uuid4().hex}")
        if making_folder(lambda: _hard_link(path, linked), target.parent, source=path):
            os.replace(linked, target)
            return
        with replacing(target) as tmp:
            shutil.copyfile(path, tmp)

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        with replacing(self._path(key)) as tmp:
            Path(tmp).write_bytes(data)

    def open(self, key: str) -> IO[bytes]:
        return open(self._path(key), "rb")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def local_path(self, key: str) -> Path:
        return self._path(key)

    def download_url(self, key: str, filename: str | None = None) -> str | None:
        return None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix.rstrip("/")), ignore_errors=True)

    @contextmanager
    def writer(self, key: str, content_type: str | None = None, size_hint: int = 0) -> Iterator[Sink]:
        with replacing(self._path(key)) as tmp, open(tmp, "wb") as out:
            yield Sink(out.write)
