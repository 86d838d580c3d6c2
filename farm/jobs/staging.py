"""Uploads held between the New job form's two steps: the file is sent once, as soon as it is picked, so the page
can offer the zip's .blend files and the scene's own settings, and a form sent back with an error keeps it.

A staged upload is a file and a small JSON note under `instance/tmp/staged/`, named by a random token; it is
removed once its job is created, and any left behind for a day (with the probe folders of killed processes) are
swept away by the next upload.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from farm.config import Settings
from farm.errors import ValidationError
from farm.jobs import uploads
from farm.jobs.submission import Upload
from farm.projects.intake import inspect_project

log = logging.getLogger(__name__)
TOKEN = re.compile(r"^[0-9a-f]{32}$")
MAX_AGE_SECONDS = 24 * 3600


@dataclass
class Staged:
    token: str
    filename: str
    kind: str
    sha256: str
    size: int
    blend_files: list[str] = field(default_factory=list)
    scenes: dict[str, dict[str, Any]] = field(default_factory=dict)  # probed scene by main ("" for a .blend)

    def upload(self, settings: Settings) -> Upload:
        return Upload(
            path=_folder(settings) / f"{self.token}.{self.kind}",
            filename=self.filename,
            sha256=self.sha256,
            size=self.size,
            kind=self.kind,
        )

    def public(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "scenes"}


def _folder(settings: Settings) -> Path:
    folder = settings.instance_dir / "tmp" / "staged"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _save_note(settings: Settings, staged: Staged) -> None:
    note = _folder(settings) / f"{staged.token}.json"
    tmp = note.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(staged)))
    tmp.replace(note)


def sweep(settings: Settings, now: float | None = None) -> None:
    """Forget staged uploads nobody turned into a job within a day, and whatever else a killed process left here
    as old: a probe's folder (a probe lasts minutes, so a day-old one is nobody's), a note's temp file. What cannot
    be removed is logged and left: the upload that happened to sweep must not fail for it."""
    cutoff = (now or time.time()) - MAX_AGE_SECONDS
    for path in _folder(settings).iterdir():
        try:
            if path.lstat().st_mtime >= cutoff:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue  # another process swept it first
        except OSError as exc:
            log.warning("could not sweep %s from the staged uploads: %s", path.name, exc)


def stage(settings: Settings, upload: Upload) -> Staged:
    """Keep a freshly saved upload (it is moved, not copied) and list a zip project's .blend files."""
    sweep(settings)
    blend_files = []
    if upload.kind == "zip":
        try:
            blend_files = uploads.inspect_zip(upload.path, max_bytes=settings.max_zip_bytes).blend_files
        except ValidationError:
            upload.path.unlink(missing_ok=True)
            raise
    staged = Staged(
        token=secrets.token_hex(16),
        filename=upload.filename,
        kind=upload.kind,
        sha256=upload.sha256,
        size=upload.size,
        blend_files=blend_files,
    )
    upload.path.replace(_folder(settings) / f"{staged.token}.{staged.kind}")
    _save_note(settings, staged)
    return staged


def load(settings: Settings, token: str) -> Staged:
    if not TOKEN.match(token or ""):
        raise ValidationError("file", "missing", "choose the .blend or .zip file again")
    try:
        note = json.loads((_folder(settings) / f"{token}.json").read_text())
    except FileNotFoundError:
        raise ValidationError("file", "expired", "the uploaded file is gone; choose it again") from None
    return Staged(**note)


def scene(settings: Settings, staged: Staged, main: str | None) -> dict[str, Any]:
    """The scene's own settings (range, resolution, engine, samples), read once by Blender with scripts off, and
    the files it uses, found in the upload or missing from it (shown on the form before Render is pressed)."""
    key = main or ""
    if key in staged.scenes:
        return staged.scenes[key]
    upload = staged.upload(settings)
    with tempfile.TemporaryDirectory(prefix="probe-", dir=upload.path.parent) as workdir:
        project = Path(workdir) / "project"
        project.mkdir()
        if staged.kind == "zip":
            if key not in staged.blend_files:
                raise ValidationError("main", "not_in_zip", f"the zip holds no .blend named {key[:200]!r}")
            uploads.safe_extract(upload.path, project)
            blend = key
        else:
            blend = Path(staged.filename).name or "scene.blend"
            shutil.copyfile(upload.path, project / blend)
        files = [p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()]
        found, _ = inspect_project(settings, project, blend, files)
    staged.scenes[key] = {k: found.get(k) for k in DEFAULTS}
    _save_note(settings, staged)
    return staged.scenes[key]


def discard(settings: Settings, staged: Staged) -> None:
    for suffix in (staged.kind, "json"):
        (_folder(settings) / f"{staged.token}.{suffix}").unlink(missing_ok=True)


DEFAULTS = (
    "scene",
    "camera",
    "frame_start",
    "frame_end",
    "engine",
    "samples",
    "resolution_x",
    "resolution_y",
    "resolution_percentage",
    "dependencies",
    "warnings",
)
