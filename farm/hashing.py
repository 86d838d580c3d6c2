"""Hashing files by content with the standard library alone. Project files are named by their sha256 on both sides:
the farm's storage, and the artist's side (`farm submit`, and the Blender add-on, which ships this module; the
storage package brings the farm's settings, and python-dotenv with them, which Blender's Python lacks)."""

from __future__ import annotations

import hashlib
import os

CHUNK = 1024 * 1024


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()
