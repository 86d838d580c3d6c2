"""The artist's side of a submission: find every file a .blend uses and make the project the farm will render.

Tracing here uses blender-asset-tracer (BAT 1.x, pure Python: it reads .blend files, zstd and gzip ones too,
without Blender, so `farm submit` needs no Blender on the artist's machine). It follows linked libraries at any
depth and expands UDIM tiles and image sequences from disk. The project root is the deepest folder holding the
.blend and every file it names by a relative path (or `--project`). When every file is inside it and named
relatively, the files are sent as they are; otherwise BAT's packer copies the project into a scratch folder,
placing files outside the root under `_outside_project/` and rewriting the paths in the copies of the .blend files
(the artist's own files are never changed). BAT's ZipPacker is not used: it writes the first frame of an image
sequence twice; a manifest lists each file once by construction.

The farm checks the result again with its own Blender (farm/projects/dependencies.py): this side decides what to send.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from blender_asset_tracer import blendfile, trace
from blender_asset_tracer.pack import Packer

log = logging.getLogger(__name__)
PACK_INFO = "pack-info.txt"  # BAT's note in a packed folder; not part of the project


@dataclass
class Project:
    """What `farm submit` sends: each project path and the local file holding its bytes."""

    root: Path  # the artist's project folder
    main: str
    files: dict[str, Path] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # files the .blend names that are not on this machine
    repointed: list[str] = field(default_factory=list)  # files outside the root, placed under _outside_project/

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.files.values())


@dataclass(frozen=True)
class Usage:
    path: Path  # as BAT resolves it
    relative: bool  # named with `//`
    files: tuple[Path, ...]  # what exists of it (a sequence's frames, UDIM tiles)


def usages(blend: Path) -> list[Usage]:
    """Every external file of `blend` and of the libraries it links, at any depth."""
    found = []
    with _quiet():
        try:
            for usage in trace.deps(blend):
                path = Path(os.path.normpath(usage.abspath))
                found.append(Usage(path, usage.asset_path.startswith(b"//"), tuple(usage.files())))
        finally:
            blendfile.close_all_cached()
    return found


def project_root(blend: Path, found: list[Usage]) -> Path:
    """The deepest folder holding the .blend and every file it names relatively."""
    paths = [blend.parent, *(u.path.parent for u in found if u.relative)]
    return Path(os.path.commonpath([str(p) for p in paths]))


def _inside(path: Path, root: Path) -> bool:
    return path.is_relative_to(root)


def pack(blend: Path, workdir: Path, root: Path | None = None) -> Project:
    """The project of `blend` (absolute); `workdir` is scratch space for a rewritten copy when one is needed."""
    blend = Path(os.path.abspath(blend))
    found = usages(blend)
    root = Path(os.path.abspath(root)) if root else project_root(blend, found)
    if not _inside(blend, root):
        raise ValueError(f"{blend} is not inside the project folder {root}")
    missing = sorted({str(u.path) for u in found if not u.files})
    if all(u.relative and _inside(u.path, root) for u in found):
        files = {blend, *(f for u in found for f in u.files)}
        return Project(root, _rel(blend, root), {_rel(f, root): f for f in files}, missing)
    return _repack(blend, root, workdir, missing)


def _repack(blend: Path, root: Path, workdir: Path, missing: list[str]) -> Project:
    """BAT's packer: a copy with every path relative, files outside `root` under `_outside_project/`."""
    target = workdir / "packed"
    with _quiet(), Packer(blend, root, target) as packer:
        packer.strategise()
        packer.execute()
    files = {_rel(f, target): f for f in _walk(target) if f.name != PACK_INFO or f.parent != target}
    repointed = sorted(p for p in files if p.startswith("_outside_project/"))
    return Project(root, _rel(target / blend.relative_to(root), target), files, missing, repointed)


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _walk(folder: Path) -> Iterator[Path]:
    for dirpath, _, names in os.walk(folder):
        for name in names:
            yield Path(dirpath) / name


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """BAT logs each missing file as a warning; the CLI lists them itself."""
    bat = logging.getLogger("blender_asset_tracer")
    level = bat.level
    bat.setLevel(logging.ERROR)
    try:
        yield
    finally:
        bat.setLevel(level)
