"""Carry one large archive to a machine in pieces, and put it back together there.

The GPU proof (bench/gpu_proof.sh) runs on a lent machine that reaches no registry and takes at most 64 MiB of files
per call; the runtime it needs (a Python 3.11, bpy 4.5 and the farm's packages) is several hundred MiB even
compressed. So the archive is cut into pieces that each fit one call, every piece and the whole archive named with
its sha256 in a manifest, and the machine keeps what each call brought in a store outside the working tree until the
last piece arrives. A piece that arrives damaged is refused by name; a manifest of another build empties the store.

Stdlib only, and for Python 3.11 and 3.12 alike: on the lent machine this runs under its own Python 3.12, before
the carried 3.11 exists.

    python -m bench.gpu.pieces receive CARRIED_DIR STORE   # store the pieces this call brought; say what is missing
    python -m bench.gpu.pieces ready STORE                 # when all are there: reassemble, unpack, print the runtime
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
CHUNK = 1 << 20


class PieceError(RuntimeError):
    """A piece or the archive is missing or not what the manifest says."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def split(archive: Path, out: Path, piece_bytes: int, about: dict[str, Any] | None = None) -> dict[str, Any]:
    """Cut `archive` into `out/piece-NN` files of at most `piece_bytes` and write `out/manifest.json`; pieces of an
    earlier build in `out` are removed first."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("piece-*"):
        old.unlink()
    pieces = []
    with open(archive, "rb") as src:
        while block := src.read(piece_bytes):
            path = out / f"piece-{len(pieces) + 1:02d}"
            path.write_bytes(block)
            pieces.append({"name": path.name, "size": len(block), "sha256": hashlib.sha256(block).hexdigest()})
    manifest = {
        "archive": archive.name,
        "size": archive.stat().st_size,
        "sha256": sha256_of(archive),
        "piece_bytes": piece_bytes,
        "pieces": pieces,
        **(about or {}),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise PieceError(f"no {MANIFEST} in {folder}")
    return json.loads(path.read_text())


def _good(path: Path, piece: dict[str, Any]) -> bool:
    return path.is_file() and path.stat().st_size == piece["size"] and sha256_of(path) == piece["sha256"]


def receive(carried: Path, store: Path) -> list[str]:
    """Copy the pieces found in `carried` into `store/pieces`, each checked against the manifest; return the names
    of the pieces the store still lacks. A damaged piece raises PieceError and is not kept."""
    manifest = read_manifest(carried)
    pieces_dir = store / "pieces"
    if store.joinpath(MANIFEST).is_file() and read_manifest(store)["sha256"] != manifest["sha256"]:
        shutil.rmtree(pieces_dir, ignore_errors=True)  # another build's pieces: none of them fits this archive
    pieces_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(carried / MANIFEST, store / MANIFEST)
    for piece in manifest["pieces"]:
        brought, kept = carried / piece["name"], pieces_dir / piece["name"]
        if not brought.is_file() or _good(kept, piece):
            continue
        partial = kept.with_suffix(".part")
        shutil.copyfile(brought, partial)
        if not _good(partial, piece):
            partial.unlink()
            raise PieceError(f"{piece['name']} arrived damaged: its size or sha256 is not the manifest's")
        partial.replace(kept)
    return missing(store)


def missing(store: Path) -> list[str]:
    """The pieces the store's manifest names that are not stored yet."""
    return [p["name"] for p in read_manifest(store)["pieces"] if not (store / "pieces" / p["name"]).is_file()]


def assemble(store: Path) -> Path:
    """Join the stored pieces, each checked again, into the archive and check the archive's own sha256."""
    manifest = read_manifest(store)
    archive = store / manifest["archive"]
    if _good(archive, manifest):
        return archive
    partial = archive.with_suffix(".part")
    with open(partial, "wb") as out:
        for piece in manifest["pieces"]:
            path = store / "pieces" / piece["name"]
            if not _good(path, piece):
                raise PieceError(f"{piece['name']} is missing or damaged in {store / 'pieces'}")
            with open(path, "rb") as src:
                shutil.copyfileobj(src, out, CHUNK)
    if not _good(partial, manifest):
        partial.unlink()
        raise PieceError(f"the joined pieces are not {manifest['archive']}: its sha256 differs from the manifest's")
    partial.replace(archive)
    return archive


def unpack(store: Path) -> Path:
    """The runtime folder, unpacked from the assembled archive once (a stamp names the archive it came from)."""
    manifest = read_manifest(store)
    runtime, stamp = store / "runtime", store / "runtime.sha256"
    if stamp.is_file() and stamp.read_text() == manifest["sha256"]:
        return runtime
    archive = assemble(store)
    shutil.rmtree(runtime, ignore_errors=True)
    stamp.unlink(missing_ok=True)
    with tarfile.open(archive, "r:*") as tar:
        tar.extractall(runtime, filter="tar")
    link_missing_libraries(runtime)
    stamp.write_text(manifest["sha256"])
    return runtime


def link_missing_libraries(runtime: Path) -> None:
    """`runtime/syslibs` holds the system libraries the build machine lent to Blender and Python (X11, libGL, …);
    only those this machine lacks are linked into `runtime/syslibs-used`, the folder put on LD_LIBRARY_PATH, so the
    machine's own copies win wherever it has them."""
    try:
        ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"  # root's PATH may lack /sbin
        known = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, check=False).stdout
    except OSError:
        known = ""  # no loader cache to ask: every carried library is used
    names = {line.split()[0] for line in known.splitlines()[1:] if line.strip()}
    used = runtime / "syslibs-used"
    used.mkdir(exist_ok=True)
    for lib in sorted((runtime / "syslibs").iterdir()):
        if lib.name not in names:
            (used / lib.name).symlink_to(lib)


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["receive"] and len(argv) == 3:
            lacking = receive(Path(argv[1]), Path(argv[2]))
            done = len(read_manifest(Path(argv[2]))["pieces"]) - len(lacking)
            print(f"store {argv[2]}: {done} pieces of {done + len(lacking)}", file=sys.stderr)
            if lacking:
                print("still to carry: " + " ".join(lacking), file=sys.stderr)
            return 0
        if argv[:1] == ["ready"] and len(argv) == 2:
            if missing(Path(argv[1])):
                return 1
            print(unpack(Path(argv[1])))
            return 0
    except PieceError as exc:
        print(f"pieces: {exc}", file=sys.stderr)
        return 2
    print(__doc__.rsplit("\n\n", 1)[-1], file=sys.stderr)
    return 64


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
