"""What a .blend needs from disk, checked against the project that was uploaded: each dependency Blender reported
(farm/blender/scripts/dependencies.py) is found, missing, or outside the project (an absolute path, or one that
climbs out of it). Nothing renders silently wrong: every one not found becomes a `missing_file` warning on the
job, and `strict=1` refuses the job instead (422 `missing_files`).

Decided by path alone, against the list of the project's files: nothing outside the project is looked at, so a
file cannot learn what the farm's machines hold by naming their paths.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any

from farm.errors import Unprocessable

FOUND, MISSING, OUTSIDE = "found", "missing", "outside"
UDIM = "<UDIM>"
NUMBER = re.compile(r"(\d+)(?!.*\d)")  # the last run of digits in a name: a sequence's frame number
SHOWN = 200  # dependencies kept per status for the New job page and the strict refusal


@dataclass(frozen=True)
class Dependency:
    kind: str  # image, library, font, sound, movie_clip, movie, cache, volume, point_cache, fluid_cache, bake
    path: str  # as the .blend stores it (what the artist recognises)
    status: str  # found, missing or outside
    project_path: str | None  # where it is (or should be) in the project; None when outside
    files: tuple[str, ...] = ()  # the project's files it covers (tiles, a sequence's frames, a cache folder's files)

    def warning(self) -> dict[str, str]:
        where = (
            "is outside the uploaded project (an absolute path, or one leading out of it): the farm does not have it"
            if self.status == OUTSIDE
            else f"is not in the uploaded project (looked for {self.project_path})"
        )
        return {"code": "missing_file", "message": f"{self.kind} {self.path} {where}", "path": self.path}


def check(reported: Iterable[dict[str, Any]], root: str, files: Collection[str]) -> list[Dependency]:
    """Classify each reported dependency (`abs` resolved by Blender with the project at `root`) against `files`,
    the project's paths relative to its root. One entry per distinct path."""
    by_path: dict[tuple[str, str], Dependency] = {}
    for entry in reported:
        kind, path, absolute = str(entry.get("kind")), str(entry.get("path")), str(entry.get("abs"))
        if (kind, absolute) in by_path:
            continue
        by_path[(kind, absolute)] = _classify(kind, path, absolute, entry, PurePosixPath(root), files)
    return list(by_path.values())


def _classify(
    kind: str, path: str, absolute: str, entry: dict[str, Any], root: PurePosixPath, files: Collection[str]
) -> Dependency:
    where = PurePosixPath(absolute)
    if not where.is_absolute() or ".." in where.parts or not where.is_relative_to(root):
        return Dependency(kind, path, OUTSIDE, None)
    rel = where.relative_to(root).as_posix()
    covered = _covered(rel, str(entry.get("form")), entry.get("tiles") or [], files)
    return Dependency(kind, path, FOUND if covered else MISSING, rel, tuple(covered))


def _covered(rel: str, form: str, tiles: list[int], files: Collection[str]) -> list[str]:
    """The project's files this dependency reads; empty when it lacks any it needs."""
    if form == "tiles":
        wanted = [rel.replace(UDIM, str(t)) for t in tiles] or [rel]
        return wanted if all(w in files for w in wanted) else []
    if form == "folder":
        prefix = rel.rstrip("/") + "/"
        return sorted(f for f in files if f.startswith(prefix))
    if rel not in files:
        return []
    if form == "sequence":
        return sequence(rel, files)
    return [rel]


def sequence(first: str, files: Iterable[str]) -> list[str]:
    """The numbered run `first` starts, as the project holds it: same folder, same name but for the frame number."""
    folder, name = PurePosixPath(first).parent, PurePosixPath(first).name
    match = NUMBER.search(name)
    if not match:
        return [first]
    pattern = re.compile(re.escape(name[: match.start()]) + r"\d+" + re.escape(name[match.end() :]) + "$")
    return sorted(f for f in files if PurePosixPath(f).parent == folder and pattern.match(PurePosixPath(f).name))


def summary(found: list[Dependency]) -> dict[str, Any]:
    """What a job (and the New job page) keeps: counts, and the files not found, named."""
    counts = {status: sum(d.status == status for d in found) for status in (FOUND, MISSING, OUTSIDE)}
    return {
        **counts,
        "files": [asdict(d) | {"files": len(d.files)} for d in found][: SHOWN * 3],
    }


def warnings(found: list[Dependency]) -> list[dict[str, str]]:
    return [d.warning() for d in found if d.status != FOUND]


def refuse_missing(found: list[Dependency]) -> None:
    """strict=1: a job with any dependency not found is refused, listing them."""
    lacking = [d for d in found if d.status != FOUND]
    if lacking:
        names = ", ".join(d.path for d in lacking[:5]) + (" …" if len(lacking) > 5 else "")
        raise Unprocessable(
            "strict",
            "missing_files",
            f"{len(lacking)} file(s) the scene uses are not in the project: {names}",
            files=[d.warning() for d in lacking[:SHOWN]],
        )
