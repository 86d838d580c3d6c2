"""A submission's project, however it came: a .blend or a zip from the form (each file stored as a blob), or a
manifest of blobs uploaded before (`farm submit`). All three end as one Manifest, laid out in a folder of its own
for Blender to read the scene and report what it needs, which is checked against the project's files.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from farm.blender.launcher import BlenderFailed, probe_scene
from farm.config import Settings
from farm.errors import ValidationError
from farm.jobs import uploads
from farm.jobs.probe_slots import PROBE_SLOTS
from farm.projects import (
    Blob,
    BlobCache,
    Manifest,
    blob_store,
    blocks,
    dependencies,
    hash_stream,
    manifest_of_file,
    zip_members,
)
from farm.storage import Storage

if TYPE_CHECKING:
    from farm.jobs.submission import Upload


def manifest_from_upload(
    session: Session, storage: Storage, settings: Settings, upload: Upload, main: str | None
) -> Manifest:
    """Store a form's upload in the blob store, file by file, and describe it as a project."""
    if upload.kind == "blend":
        if main:
            raise ValidationError("main", "not_a_zip", "main is only for .zip projects")
        blob = Blob(upload.sha256, upload.size)
        blob_store.adopt(session, storage, settings, upload.path, blob)
        return manifest_of_file(upload.filename, blob)
    return manifest_from_zip(session, storage, settings, upload.path, main)


def zip_main(archive: Path, main: str | None, settings: Settings) -> str:
    """`main` checked against a zip project that is safe to unpack."""
    project = uploads.inspect_zip(archive, max_bytes=settings.max_zip_bytes)
    if not main:
        hint = f" (it holds: {', '.join(project.blend_files[:10])})" if project.blend_files else " (it holds none)"
        raise ValidationError("main", "missing", "main must name the .blend inside the zip to render" + hint)
    clean = main.replace("\\", "/").removeprefix("./")
    if clean not in project.blend_files:
        raise ValidationError("main", "not_in_zip", f"the zip holds no .blend named {main[:200]!r}")
    if not uploads.is_blend(uploads.read_zip_member_head(archive, clean)):
        raise ValidationError("main", "not_blend", f"{clean!r} inside the zip is not a .blend file")
    return clean


def manifest_from_zip(
    session: Session, storage: Storage, settings: Settings, archive: Path, main: str | None
) -> Manifest:
    """Each file of the zip becomes a blob (stored once, whichever project or user sent it first)."""
    clean = zip_main(archive, main, settings)
    files: dict[str, Blob] = {}
    with tempfile.TemporaryDirectory(prefix="unzip-", dir=archive.parent) as tmp, zipfile.ZipFile(archive) as zf:
        member = Path(tmp) / "member"
        for rel, info in zip_members(archive):
            with zf.open(info) as src:
                blob = hash_stream(blocks(src), member, settings.max_zip_bytes)
            blob_store.adopt(session, storage, settings, member, blob)
            member.unlink()
            files[rel] = blob
    return Manifest(clean, files)


def inspect_project(
    settings: Settings, root: Path, main: str, files: Collection[str], render: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[dependencies.Dependency]]:
    """Blender's reading of the project's main .blend (scripts off), with `dependencies` (counts, and those not
    found named) and a `missing_file` warning for each dependency not found in `files`."""
    root = root.resolve()
    blend = root / main
    try:
        with PROBE_SLOTS.hold(settings.max_probes):
            scene = probe_scene(settings, blend, render)
    except BlenderFailed as exc:  # the user's error, named as they know it, not by this server's folders
        said = str(exc).replace(str(blend), main).replace(str(root), "<project>")
        said = said.replace(str(settings.cache_dir), "<cache>").replace(str(settings.instance_dir), "<instance>")
        raise ValidationError("file", "unreadable_blend", f"Blender could not open the file: {said}") from None
    found = dependencies.check(scene.pop("dependencies", []), str(root), set(files))
    scene["dependencies"] = dependencies.summary(found)
    scene["warnings"] = [*scene.get("warnings", []), *dependencies.warnings(found)]
    return scene, found


def build_and_inspect(
    settings: Settings,
    storage: Storage,
    manifest: Manifest,
    workdir: Path,
    render: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[dependencies.Dependency]]:
    """Lay the project out in `workdir/project` from this machine's blob cache and inspect it."""
    cache = BlobCache(settings.cache_dir)
    cache.build(storage, manifest, workdir / "project")
    inspected = inspect_project(settings, workdir / "project", manifest.main, manifest.files.keys(), render)
    cache.trim(settings.cache_max_bytes)
    return inspected
