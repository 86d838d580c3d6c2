"""Send a packed project to the farm by content: hash every file, ask which the farm lacks, upload only those, and
name them all in the job's manifest. Re-submitting after changing one file uploads that file.

Shared by `farm submit` and the Blender add-on (which ships this module, farm/addon): so it needs nothing beyond
the standard library, the HTTP client and BAT, and each caller draws its own progress bar (`Progress`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from farm.cli.client import FarmClient
from farm.hashing import sha256_file
from farm.projects.packing import Project

# Given the number of files and bytes about to be uploaded, a context in which each call reports bytes sent.
Progress = Callable[[int, int], AbstractContextManager[Callable[[int], None]]]


@dataclass(frozen=True)
class Sent:
    manifest: dict[str, Any]
    uploaded: int  # files uploaded now
    uploaded_bytes: int
    total: int  # files in the project


def manifest_of(project: Project) -> tuple[dict[str, Any], dict[str, str]]:
    """The manifest, and per sha256 one project path holding those bytes."""
    files, where = {}, {}
    for rel, path in sorted(project.files.items()):
        sha = sha256_file(path)
        files[rel] = {"sha256": sha, "size": path.stat().st_size}
        where.setdefault(sha, rel)
    return {"main": project.main, "files": files}, where


def no_progress(files: int, total_bytes: int) -> AbstractContextManager[Callable[[int], None]]:
    return contextlib.nullcontext(lambda sent: None)


def send(api: FarmClient, project: Project, progress: Progress = no_progress) -> Sent:
    manifest, where = manifest_of(project)
    blobs = list({f["sha256"]: f for f in manifest["files"].values()}.values())
    missing = api.missing_files(blobs)
    total_bytes = sum(b["size"] for b in missing)
    with progress(len(missing), total_bytes) as advance:
        for blob in missing:
            api.put_file(blob["sha256"], project.files[where[blob["sha256"]]], advance)
    return Sent(manifest, len(missing), total_bytes, len(manifest["files"]))
