"""Where uploads, frames, logs and zips live: `file://` (`local.py`) or `s3://` (`s3.py`, the only module of the farm
that imports boto3). This module is the interface both back ends keep, and the helpers they share.

Keys are plain relative paths (`jobs/<id>/frames/0001.png`); one helper applies the URL's prefix. A missing key is
`FileNotFoundError` in both back ends, so callers never see a botocore error type.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import unquote, urlparse

from farm.config import Settings

CHUNK = 1024 * 1024
T = TypeVar("T")


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def regular_file(path: Path) -> bool:
    """Whether `path` is a plain file itself, not a link to one nor anything else: the only kind of file the farm
    takes from a folder Blender wrote into (an image there is stored, kept and deleted by the farm)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode) and stat.S_ISDIR(os.lstat(path.parent).st_mode)
    except OSError:
        return False


class StorageUnavailable(ConnectionError):
    """The storage endpoint could not be reached or failed on its side (5xx): worth retrying."""


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"bad storage key {key!r}")
    return key


def making_folder(action: Callable[[], T], folder: Path, source: str | os.PathLike | None = None) -> T:
    """Run `action`, which puts a file in `folder`; if the folder is missing (its first file), make it and run it
    again. Not checked before every file, which would cost a syscall each time. A missing `source` still raises."""
    try:
        return action()
    except FileNotFoundError:
        if source is not None and not os.path.exists(source):
            raise
        folder.mkdir(parents=True, exist_ok=True)
        return action()


@contextmanager
def replacing(target: Path) -> Iterator[str]:
    """A temporary file beside `target` that becomes `target` when the block ends (atomically), and is removed if
    it raises: a reader never sees a half-written file."""
    fd, tmp = making_folder(lambda: tempfile.mkstemp(prefix=".part-", dir=target.parent), target.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Storage(ABC):
    """Blob storage with the few operations the farm needs."""

    url_prefix: str

    @abstractmethod
    def put_file(self, key: str, path: str | os.PathLike, content_type: str | None = None) -> None: ...

    @abstractmethod
    def open(self, key: str) -> IO[bytes]:
        """A stream to read the object; the caller closes it."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def download_url(self, key: str, filename: str | None = None) -> str | None:
        """A URL a client can fetch directly (presigned for S3); None when the app must serve the bytes."""

    def browser_origin(self) -> str | None:
        """The origin (scheme://host[:port]) of download_url's URLs, which pages must be allowed to load images
        from; None when the app serves the bytes itself."""
        url = self.download_url("origin-probe")
        if url is None:
            return None
        parsed = urlparse(url)
        return f"{parsed.scheme}://{parsed.netloc}"

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object; a missing one is fine."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None: ...

    @abstractmethod
    def ensure_ready(self) -> None:
        """Create what must exist before first use (the bucket, the folder)."""

    @abstractmethod
    def writer(self, key: str, content_type: str | None = None, size_hint: int = 0) -> AbstractContextManager[Sink]:
        """A stream to write the object as it is produced (the packager's zip): it appears whole when the block
        ends, and not at all if the block raises."""

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        with tempfile.NamedTemporaryFile(prefix="farm-put-") as tmp:
            tmp.write(data)
            tmp.flush()
            self.put_file(key, tmp.name, content_type)

    def get_file(self, key: str, dest: str | os.PathLike) -> None:
        """Download to `dest` atomically: a reader never sees a half-written file."""
        with replacing(Path(dest)) as tmp, open(tmp, "wb") as out, self.open(key) as src:
            shutil.copyfileobj(src, out, CHUNK)

    def read_bytes(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()


class Sink(io.RawIOBase):
    """A write-only, unseekable stream that hands every write on and counts the bytes (zipfile writes data
    descriptors to it, so no seek is needed)."""

    def __init__(self, write: Callable[[bytes], object]) -> None:
        super().__init__()
        self._write, self.written = write, 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        self._write(data)  # not copied: both writers copy what they keep before returning
        self.written += size
        return size


def open_storage(settings: Settings) -> Storage:
    parsed = urlparse(settings.storage_url)
    if parsed.scheme == "file":
        from farm.storage.local import FileStorage  # here: both back ends import this module

        return FileStorage(Path(unquote(parsed.path)))
    from farm.storage.s3 import S3Storage

    return S3Storage(
        parsed.netloc,
        parsed.path,
        settings.s3_endpoint_url,
        public_url=settings.s3_public_url,
        url_seconds=settings.presign_seconds,
    )
