"""Checks on uploaded files before anything trusts them: is it a .blend, is the zip project safe to unpack."""

from __future__ import annotations

import gzip
import io
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from farm.errors import ValidationError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"


def _decompressed_head(head: bytes) -> bytes:
    """The first bytes of a .blend, looking through the zstd (Blender ≥ 3.0) or gzip (older) wrapper."""
    if head.startswith(ZSTD_MAGIC):
        import zstandard

        try:
            return zstandard.ZstdDecompressor().decompressobj().decompress(head)[:16]
        except zstandard.ZstdError:
            return b""
    if head.startswith(GZIP_MAGIC):
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(head)) as fh:
                return fh.read(16)
        except (OSError, EOFError):
            return b""
    return head


def is_blend(head: bytes) -> bool:
    """True when these leading bytes are a Blender file, plain or compressed."""
    return _decompressed_head(head[:65536]).startswith(b"BLENDER")


def is_zip(head: bytes) -> bool:
    return head.startswith(ZIP_MAGIC) or head.startswith(EMPTY_ZIP_MAGIC)


@dataclass(frozen=True)
class ZipProject:
    blend_files: list[str]
    uncompressed_size: int


def inspect_zip(path: Path, *, max_bytes: int) -> ZipProject:
    """Refuse archives that could escape their folder or fill the disk; list the .blend files inside."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValidationError("file", "bad_zip", "the .zip file is damaged or not a zip archive") from None
    with archive:
        total = 0
        blends = []
        for info in archive.infolist():
            name = info.filename
            pure = PurePosixPath(name.replace("\\", "/"))
            if pure.is_absolute() or ".." in pure.parts or (len(name) > 1 and name[1] == ":"):
                raise ValidationError("file", "unsafe_zip", f"the zip holds an unsafe path: {name!r}")
            if info.flag_bits & 0x1:
                raise ValidationError("file", "encrypted_zip", f"the zip holds an encrypted file: {name!r}")
            total += info.file_size
            if total > max_bytes:
                raise ValidationError("file", "zip_too_large", f"the zip unpacks to more than {max_bytes // 2**20} MiB")
            if name.lower().endswith(".blend") and not info.is_dir():
                blends.append(name)
        return ZipProject(blend_files=sorted(blends), uncompressed_size=total)


def read_zip_member_head(path: Path, member: str, size: int = 65536) -> bytes:
    with zipfile.ZipFile(path) as archive, archive.open(member) as fh:
        return fh.read(size)


def safe_extract(path: Path, dest: Path) -> None:
    """Unpack a zip that `inspect_zip` accepted; each target is re-checked to stay inside `dest`."""
    dest = dest.resolve()
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            target = (dest / info.filename.replace("\\", "/")).resolve()
            if not target.is_relative_to(dest):
                raise ValueError(f"unsafe path in zip: {info.filename!r}")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1024 * 1024)
