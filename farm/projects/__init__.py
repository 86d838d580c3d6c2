"""Projects as content-addressed files: a manifest maps each project path to a blob (sha256 and size), every blob
is stored once under `blobs/<sha256>` whoever uploaded it, and a machine that needs a project (the web host to
probe it, a worker to render it) builds the folder from its own cache of blobs with hard links, fetching only the
blobs it lacks. A .blend, a zip from the web form and a `farm submit` manifest all become such a project, so
re-submitting after changing one file uploads, stores and fetches that one file.

The manifest itself is stored as a blob too: a job names it by its sha256.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from farm.errors import ValidationError
from farm.storage import CHUNK, Storage, sha256_file

SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_FILES = 100_000
MAX_PATH = 1000


def blob_key(sha256: str) -> str:
    return f"blobs/{sha256}"


@dataclass(frozen=True)
class Blob:
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    main: str
    files: dict[str, Blob]

    def to_bytes(self) -> bytes:
        """Canonical JSON: the same project always hashes the same."""
        files = {p: {"sha256": b.sha256, "size": b.size} for p, b in sorted(self.files.items())}
        return json.dumps({"main": self.main, "files": files}, sort_keys=True, separators=(",", ":")).encode()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()


def project_path(raw: str, field: str = "manifest") -> str:
    """A path inside a project: relative, `/`-separated, no `..`, no drive, no control characters."""
    path = raw.replace("\\", "/")
    pure = PurePosixPath(path)
    if (
        not path
        or len(path) > MAX_PATH
        or pure.is_absolute()
        or ".." in pure.parts
        or re.match(r"^[A-Za-z]:", path)
        or any(ord(c) < 32 for c in path)
        or path.endswith("/")
    ):
        raise ValidationError(field, "bad_path", f"not a path inside a project: {raw[:200]!r}")
    return pure.as_posix()


def parse_blob(raw: object, field: str) -> Blob:
    if not isinstance(raw, Mapping):
        raise ValidationError(field, "bad_file", 'each file must be {"sha256": hex, "size": bytes}')
    sha256, size = raw.get("sha256"), raw.get("size")
    if not isinstance(sha256, str) or not SHA256.match(sha256):
        raise ValidationError(field, "bad_sha256", f"sha256 must be 64 lowercase hex digits, got {str(sha256)[:80]!r}")
    if isinstance(size, float) and size.is_integer():  # JSON has one kind of number: 7.0 is the integer 7
        size = int(size)
    if type(size) is not int or size < 0:
        raise ValidationError(field, "bad_size", f"size must be a whole number of bytes, got {str(size)[:40]!r}")
    return Blob(sha256, size)


def parse_manifest(text: str) -> Manifest:
    """The `manifest` form field, checked: every path inside the project, every blob well formed, `main` listed."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError("manifest", "bad_json", f"manifest is not JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("files"), dict) or not isinstance(raw.get("main"), str):
        raise ValidationError("manifest", "bad_manifest", 'manifest must be {"main": path, "files": {path: blob}}')
    if len(raw["files"]) > MAX_FILES:
        raise ValidationError("manifest", "too_many_files", f"a project may hold at most {MAX_FILES} files")
    files: dict[str, Blob] = {}
    for path, blob in raw["files"].items():
        clean = project_path(path)
        if clean in files:
            raise ValidationError("manifest", "duplicate_path", f"{clean!r} is listed twice")
        files[clean] = parse_blob(blob, "manifest")
    main = project_path(raw["main"], "main")
    if main not in files:
        raise ValidationError("main", "not_in_project", f"the project holds no {main!r}")
    if not main.lower().endswith(".blend"):
        raise ValidationError("main", "not_blend", f"main must be a .blend file, got {main!r}")
    return Manifest(main, files)


def read_manifest(storage: Storage, sha256: str) -> Manifest:
    """A job's manifest from storage, checked against the hash the job names it by."""
    data = storage.read_bytes(blob_key(sha256))
    if hashlib.sha256(data).hexdigest() != sha256:
        raise BlobCorrupt("the project's manifest arrived with the wrong content")
    return parse_manifest(data.decode())


def manifest_of_file(name: str, blob: Blob) -> Manifest:
    name = project_path(Path(name).name or "scene.blend", "file")
    return Manifest(name, {name: blob})


def zip_members(archive: Path) -> Iterator[tuple[str, zipfile.ZipInfo]]:
    """The files of a zip project that `uploads.inspect_zip` accepted, with their project paths."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if not info.is_dir():
                yield project_path(info.filename, "file"), info


UNTOUCHED = 0  # the modification time every cached blob is given: a write through any hard link to it changes it


class BlobCache:
    """A machine's blobs (`<cache>/blobs/<sha256>`, read-only), shared by every project built on it. A project is
    a folder of hard links to them (a copy where the folder is on another file system).

    A Blender that writes into a file of its project in place (Mantaflow rewrites its cache's config as a file
    loads; a worker running as root is not stopped by the read-only mode) would change the cached blob for every
    later job. So each blob's modification time is set to UNTOUCHED when it is cached, and one that is not any more
    is fetched again; recency, for trimming, is kept in the access time."""

    def __init__(self, cache_dir: Path) -> None:
        self.folder = cache_dir / "blobs"
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.folder / sha256

    def has(self, blob: Blob) -> bool:
        try:
            info = self.path(blob.sha256).stat()
        except FileNotFoundError:
            return False
        return info.st_size == blob.size and info.st_mtime_ns == UNTOUCHED

    def adopt(self, source: Path, blob: Blob) -> Path:
        """Take in a file whose hash was checked here (hard-linked, or copied across file systems); the caller
        keeps `source` and removes it when done."""
        target = self.path(blob.sha256)
        if not self.has(blob):
            incoming = self.folder / f".in-{secrets.token_hex(8)}"
            try:
                os.link(source, incoming)
            except OSError:
                shutil.copyfile(source, incoming)
            os.chmod(incoming, 0o444)
            os.utime(incoming, ns=(time.time_ns(), UNTOUCHED))
            os.replace(incoming, target)
        return target

    def fetch(self, storage: Storage, blob: Blob) -> Path:
        """The blob, downloaded and checked first if this machine lacks it."""
        if self.has(blob):
            os.utime(self.path(blob.sha256), ns=(time.time_ns(), UNTOUCHED))  # recency, for trimming
            return self.path(blob.sha256)
        fd, tmp = tempfile.mkstemp(prefix=".fetch-", dir=self.folder)
        os.close(fd)
        try:
            storage.get_file(blob_key(blob.sha256), tmp)
            actual, size = sha256_file(tmp), os.path.getsize(tmp)
            if (actual, size) != (blob.sha256, blob.size):
                raise BlobCorrupt(f"a project file arrived with the wrong content ({size} bytes)")
            return self.adopt(Path(tmp), blob)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def build(self, storage: Storage, manifest: Manifest, dest: Path) -> Path:
        """Lay the project out under `dest` (which must not exist yet); returns its main .blend."""
        for rel, blob in manifest.files.items():
            source = self.fetch(storage, blob)
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:  # another file system, or links not allowed: a copy does
                shutil.copyfile(source, target)
        return dest / manifest.main

    def trim(self, max_bytes: int, idle_seconds: float = 3600) -> list[str]:
        """Delete blobs no project folder links (one link: the cache's own) and unused for `idle_seconds`, least
        recently used first, until the cache fits in `max_bytes`."""
        entries = []
        for entry in os.scandir(self.folder):
            with contextlib.suppress(FileNotFoundError):
                info = entry.stat(follow_symlinks=False)
                entries.append((info.st_atime, entry.path, info.st_size, info.st_nlink))
        total = sum(e[2] for e in entries)
        removed = []
        for used, path, size, links in sorted(entries):
            if total <= max_bytes:
                break
            if links > 1 or time.time() - used < idle_seconds:
                continue
            Path(path).unlink(missing_ok=True)
            total -= size
            removed.append(os.path.basename(path))
        return removed


class BlobCorrupt(RuntimeError):
    pass


def hash_stream(read: Iterator[bytes], dest: Path, limit: int) -> Blob:
    """Write blocks to `dest`, hashing as they go; more than `limit` bytes raises OverflowError."""
    digest, size = hashlib.sha256(), 0
    with open(dest, "wb") as out:
        for block in read:
            size += len(block)
            if size > limit:
                raise OverflowError(limit)
            digest.update(block)
            out.write(block)
    return Blob(digest.hexdigest(), size)


def blocks(stream: object) -> Iterator[bytes]:
    while block := stream.read(CHUNK):  # type: ignore[attr-defined]
        yield block
