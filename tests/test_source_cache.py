"""A worker's source cache: verified downloads, unpacked zip projects, and LRU trimming that spares busy sources."""

import hashlib
import os
import time
import zipfile

import pytest

from farm.config import load_settings
from farm.storage import open_storage
from workers.source_cache import SourceCorrupt, local_blend, trim_cache


@pytest.fixture()
def storage(tmp_path):
    store = open_storage(load_settings({"FARM_INSTANCE_DIR": str(tmp_path / "inst")}, dotenv_path=None))
    store.ensure_ready()
    return store


def put(storage, key, data):
    storage.put_bytes(key, data)
    return hashlib.sha256(data).hexdigest()


def test_blend_is_downloaded_once_and_verified(storage, tmp_path):
    sha = put(storage, "uploads/a.blend", b"BLENDER-v405 scene")
    path = local_blend(
        storage, tmp_path / "cache", key="uploads/a.blend", sha256=sha, kind="blend", main=None, max_bytes=2**30
    )
    assert path.read_bytes() == b"BLENDER-v405 scene"
    storage.delete("uploads/a.blend")  # a second chunk needs no storage at all
    assert (
        local_blend(
            storage, tmp_path / "cache", key="uploads/a.blend", sha256=sha, kind="blend", main=None, max_bytes=2**30
        )
        == path
    )


def test_corrupt_download_is_refused(storage, tmp_path):
    put(storage, "uploads/b.blend", b"not what was uploaded")
    with pytest.raises(SourceCorrupt):
        local_blend(
            storage,
            tmp_path / "cache",
            key="uploads/b.blend",
            sha256="0" * 64,
            kind="blend",
            main=None,
            max_bytes=2**30,
        )


def test_zip_project_is_unpacked_with_its_textures(storage, tmp_path):
    archive = tmp_path / "p.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("shots/main.blend", b"BLENDER-v405")
        zf.writestr("tex/wood.png", b"png")
    sha = put(storage, "uploads/p.zip", archive.read_bytes())
    path = local_blend(
        storage,
        tmp_path / "cache",
        key="uploads/p.zip",
        sha256=sha,
        kind="zip",
        main="shots/main.blend",
        max_bytes=2**30,
    )
    assert path.read_bytes() == b"BLENDER-v405"
    assert (path.parent.parent / "tex" / "wood.png").read_bytes() == b"png"  # //../tex/wood.png resolves
    with pytest.raises(SourceCorrupt):
        local_blend(
            storage, tmp_path / "cache", key="uploads/p.zip", sha256=sha, kind="zip", main="nope.blend", max_bytes=2**30
        )


def test_trim_cache_drops_least_recent_idle_sources(tmp_path):
    sources = tmp_path / "sources"
    old = time.time() - 7200
    for i, age in enumerate([old - 30, old - 20, old - 10, time.time()]):
        folder = sources / f"s{i}"
        folder.mkdir(parents=True)
        (folder / "scene.blend").write_bytes(bytes(1000))
        os.utime(folder, (age, age))
    removed = trim_cache(sources, 2500, keep=sources / "s0")
    # s0 is kept (in use by this chunk), s3 is recent (maybe rendering elsewhere): s1 and s2 go, oldest first
    assert removed == [sources / "s1", sources / "s2"]
    assert sorted(p.name for p in sources.iterdir()) == ["s0", "s3"]
