"""The GPU proof's carrying step (bench/gpu/pieces.py): an archive cut into pieces, brought one call at a time into a
store, checked and joined back byte for byte; a damaged piece refused by name; the runtime unpacked with only the
system libraries the machine lacks put on its library path."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from bench.gpu import pieces

PIECE = 256 * 1024


def one_call(source: Path, name: str, dest: Path) -> Path:
    """What one call of the lent machine brings: the manifest and one piece, nothing else."""
    dest.mkdir()
    for file in (pieces.MANIFEST, name):
        (dest / file).write_bytes((source / file).read_bytes())
    return dest


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    path = tmp_path / "runtime.bin"
    path.write_bytes(os.urandom(3 * 2**20 + 12345))  # not a multiple of the piece size: the last piece is short
    return path


def test_pieces_arrive_one_call_at_a_time_and_join_byte_for_byte(tmp_path: Path, archive: Path) -> None:
    out, store = tmp_path / "pieces", tmp_path / "store"
    manifest = pieces.split(archive, out, PIECE, {"bpy": "4.5.test"})
    names = [p["name"] for p in manifest["pieces"]]
    assert len(names) == 13 and manifest["pieces"][-1]["size"] == 12345
    assert json.loads((out / pieces.MANIFEST).read_text())["bpy"] == "4.5.test"
    for number, name in enumerate(names, 1):
        missing = pieces.receive(one_call(out, name, tmp_path / f"call-{number}"), store)
        assert missing == names[number:]
    joined = pieces.assemble(store)
    assert joined.read_bytes() == archive.read_bytes()
    assert pieces.sha256_of(joined) == manifest["sha256"]


def test_a_damaged_piece_is_refused_by_name_and_not_kept(tmp_path: Path, archive: Path) -> None:
    out, store = tmp_path / "pieces", tmp_path / "store"
    pieces.split(archive, out, PIECE)
    call = one_call(out, "piece-02", tmp_path / "call")
    damaged = bytearray((call / "piece-02").read_bytes())
    damaged[1000] ^= 0x01
    (call / "piece-02").write_bytes(bytes(damaged))
    with pytest.raises(pieces.PieceError, match="piece-02 arrived damaged"):
        pieces.receive(call, store)
    assert not list((store / "pieces").iterdir())
    (store / "pieces" / "piece-02").write_bytes(bytes(damaged))  # damaged after it was stored, say
    for number in range(1, 14):
        if number != 2:
            pieces.receive(one_call(out, f"piece-{number:02d}", tmp_path / f"call-{number}"), store)
    with pytest.raises(pieces.PieceError, match="piece-02 is missing or damaged"):
        pieces.assemble(store)


def test_another_build_empties_the_store(tmp_path: Path, archive: Path) -> None:
    store = tmp_path / "store"
    pieces.split(archive, tmp_path / "old", PIECE)
    pieces.receive(one_call(tmp_path / "old", "piece-01", tmp_path / "call-old"), store)
    archive.write_bytes(os.urandom(2 * PIECE))
    pieces.split(archive, tmp_path / "new", PIECE)
    missing = pieces.receive(one_call(tmp_path / "new", "piece-02", tmp_path / "call-new"), store)
    assert missing == ["piece-01"]
    assert sorted(p.name for p in (store / "pieces").iterdir()) == ["piece-02"]


def test_the_runtime_unpacks_once_with_only_missing_libraries_on_the_path(tmp_path: Path) -> None:
    built = tmp_path / "runtime.tar.xz"
    with tarfile.open(built, "w:xz") as tar:
        for name, data in (("syslibs/libc.so.6", b"glibc"), ("syslibs/libfarm-proof-test.so.0", b"x"), ("a", b"a")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out, store = tmp_path / "pieces", tmp_path / "store"
    pieces.split(built, out, 100)
    for piece in pieces.read_manifest(out)["pieces"]:
        pieces.receive(one_call(out, piece["name"], tmp_path / piece["name"]), store)
    runtime = pieces.unpack(store)
    assert (runtime / "a").read_bytes() == b"a"
    assert [p.name for p in (runtime / "syslibs-used").iterdir()] == ["libfarm-proof-test.so.0"]  # libc: the machine's
    (runtime / "a").write_bytes(b"changed")
    assert pieces.unpack(store) == runtime and (runtime / "a").read_bytes() == b"changed"  # not unpacked twice
