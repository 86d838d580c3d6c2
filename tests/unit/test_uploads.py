import gzip
import zipfile

import pytest
import zstandard

from farm.errors import ValidationError
from farm.jobs.uploads import inspect_zip, is_blend, is_zip, safe_extract

PLAIN = b"BLENDER-v405REND" + bytes(200)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (PLAIN, True),
        (zstandard.ZstdCompressor().compress(PLAIN), True),  # Blender >= 3.0 compressed files
        (gzip.compress(PLAIN), True),  # Blender < 3.0 compressed files
        (b"BLENDER17-01v0500" + bytes(50), True),  # Blender 5 header
        (b"PK\x03\x04" + bytes(20), False),
        (b"\x89PNG\r\n\x1a\n" + bytes(20), False),
        (zstandard.ZstdCompressor().compress(b"not a blend file at all"), False),
        (gzip.compress(b"hello"), False),
        (b"\x28\xb5\x2f\xfd garbage", False),
        (b"", False),
    ],
)
def test_is_blend_looks_through_compression(head, expected):
    assert is_blend(head) is expected


def test_is_zip():
    assert is_zip(b"PK\x03\x04rest") and is_zip(b"PK\x05\x06") and not is_zip(PLAIN)


def make_zip(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_inspect_zip_lists_blend_files(tmp_path):
    path = make_zip(tmp_path / "p.zip", {"shots/a.blend": PLAIN, "tex/wood.png": b"x", "b.BLEND": PLAIN})
    project = inspect_zip(path, max_bytes=10**6)
    assert project.blend_files == ["b.BLEND", "shots/a.blend"]
    assert project.uncompressed_size == 2 * len(PLAIN) + 1


@pytest.mark.parametrize("name", ["../evil.blend", "/etc/passwd", "a/../../b.blend", "C:/x.blend", "..\\x.blend"])
def test_inspect_zip_refuses_unsafe_paths(tmp_path, name):
    path = make_zip(tmp_path / "p.zip", {name: PLAIN})
    with pytest.raises(ValidationError) as err:
        inspect_zip(path, max_bytes=10**6)
    assert (err.value.field, err.value.code) == ("file", "unsafe_zip")


def test_inspect_zip_refuses_absurd_sizes(tmp_path):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", bytes(5 * 2**20))
    assert path.stat().st_size < 100_000
    with pytest.raises(ValidationError) as err:
        inspect_zip(path, max_bytes=2**20)
    assert err.value.code == "zip_too_large"


def test_inspect_zip_refuses_damaged_archives(tmp_path):
    path = tmp_path / "bad.zip"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ValidationError) as err:
        inspect_zip(path, max_bytes=10**6)
    assert err.value.code == "bad_zip"


def test_safe_extract_keeps_files_inside(tmp_path):
    path = make_zip(tmp_path / "p.zip", {"a/scene.blend": PLAIN, "a/tex/x.png": b"png"})
    safe_extract(path, tmp_path / "out")
    assert (tmp_path / "out/a/scene.blend").read_bytes() == PLAIN
    assert (tmp_path / "out/a/tex/x.png").read_bytes() == b"png"
    evil = make_zip(tmp_path / "evil.zip", {"../escape.txt": b"x"})
    with pytest.raises(ValueError):
        safe_extract(evil, tmp_path / "out2")
    assert not (tmp_path / "escape.txt").exists()
