"""Send a packed project to the farm by content: hash every file, ask which the farm lacks, upload only those (with a
progress bar), and name them all in the job's manifest. Re-submitting after changing one file uploads that file.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from typing import Any

import click

from farm.cli.client import FarmClient
from farm.projects.packing import Project
from farm.storage import sha256_file


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


def send(api: FarmClient, project: Project) -> Sent:
    manifest, where = manifest_of(project)
    blobs = list({f["sha256"]: f for f in manifest["files"].values()}.values())
    missing = api.missing_files(blobs)
    total_bytes = sum(b["size"] for b in missing)
    with click.progressbar(  # drawn on a terminal only: piped, stderr is kept for one-line errors
        length=total_bytes,
        label=f"uploading {len(missing)} files",
        file=sys.stderr if sys.stderr.isatty() else io.StringIO(),
        show_pos=True,
    ) as bar:
        for blob in missing:
            api.put_file(blob["sha256"], project.files[where[blob["sha256"]]], bar.update)
    return Sent(manifest, len(missing), total_bytes, len(manifest["files"]))
