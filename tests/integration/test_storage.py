import random
import tempfile
from pathlib import Path

import pytest

from farm.config import load_settings
from farm.storage import open_storage, sha256_file
from farm.storage.local import FileStorage
from farm.storage.s3 import S3Storage
from tests.helpers import HTTP


@pytest.fixture(params=["file", "s3"])
def storage(request, tmp_path):
    if request.param == "file":
        store = open_storage(load_settings({"FARM_INSTANCE_DIR": str(tmp_path)}, dotenv_path=None))
        assert isinstance(store, FileStorage)
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        env = {
            "FARM_INSTANCE_DIR": str(tmp_path),
            "FARM_STORAGE_URL": f"s3://store-test-{tmp_path.name.lower()}/pre",
            "FARM_S3_ENDPOINT_URL": endpoint,
        }
        store = open_storage(load_settings(env, dotenv_path=None))
        assert isinstance(store, S3Storage)
    store.ensure_ready()
    return store


def test_round_trip(storage, tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(b"frame bytes" * 1000)
    storage.put_file("jobs/j1/frames/0001.png", source, "image/png")
    assert storage.exists("jobs/j1/frames/0001.png")
    assert storage.size("jobs/j1/frames/0001.png") == 11000
    assert storage.read_bytes("jobs/j1/frames/0001.png") == source.read_bytes()
    storage.get_file("jobs/j1/frames/0001.png", tmp_path / "copy" / "x.png")
    assert (tmp_path / "copy" / "x.png").read_bytes() == source.read_bytes()


def test_missing_keys_are_file_not_found(storage, tmp_path):
    assert not storage.exists("nope/x")
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("nope/x")
    with pytest.raises(FileNotFoundError):
        storage.size("nope/x")
    with pytest.raises(FileNotFoundError):
        storage.get_file("nope/x", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_delete_prefix_removes_only_that_prefix(storage):
    storage.put_bytes("jobs/a/1", b"1")
    storage.put_bytes("jobs/a/2", b"2")
    storage.put_bytes("jobs/ab/1", b"3")
    storage.delete_prefix("jobs/a")
    assert not storage.exists("jobs/a/1") and not storage.exists("jobs/a/2")
    assert storage.exists("jobs/ab/1")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a"])
def test_bad_keys_are_refused(storage, key):
    with pytest.raises(ValueError):
        storage.put_bytes(key, b"x")


def test_s3_download_url_is_presigned_and_works(s3_endpoint, tmp_path):
    env = {
        "FARM_INSTANCE_DIR": str(tmp_path),
        "FARM_STORAGE_URL": "s3://presign-test",
        "FARM_S3_ENDPOINT_URL": s3_endpoint,
    }
    store = open_storage(load_settings(env, dotenv_path=None))
    store.ensure_ready()
    store.put_bytes("jobs/x/out.zip", b"zipbytes")
    url = store.download_url("jobs/x/out.zip", "out.zip")
    assert url.startswith(s3_endpoint) and "Signature" in url
    response = HTTP.get(url, timeout=10)
    assert response.content == b"zipbytes"
    assert 'filename="out.zip"' in response.headers["Content-Disposition"]


def test_s3_large_objects_go_up_in_parts_and_come_down_whole(s3_endpoint, tmp_path):
    env = {
        "FARM_INSTANCE_DIR": str(tmp_path),
        "FARM_STORAGE_URL": "s3://multipart-test",
        "FARM_S3_ENDPOINT_URL": s3_endpoint,
    }
    store = open_storage(load_settings(env, dotenv_path=None))
    store.ensure_ready()
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x01" * (70 * 2**20))
    store.put_file("big.bin", big)
    head = store.client.head_object(Bucket="multipart-test", Key="big.bin")
    assert head["ContentLength"] == 70 * 2**20
    assert head["ETag"].strip('"').endswith("-2")  # two 64 MiB parts
    store.get_file("big.bin", tmp_path / "back.bin")  # past the threshold: ranged GETs, not the one-GET path
    assert sha256_file(tmp_path / "back.bin") == sha256_file(big)


@pytest.mark.parametrize("size", [1000, 40 * 2**20 + 123])  # one request; three multipart parts
def test_writer_streams_an_object_that_appears_whole(storage, size):
    data = random.Random(size).randbytes(size)
    with storage.writer("jobs/w/out.zip", "application/zip") as out:
        for start in range(0, size, 1_000_003):  # odd-sized writes, as zipfile makes them
            out.write(data[start : start + 1_000_003])
        assert not storage.exists("jobs/w/out.zip")  # nothing visible before the block ends
    assert out.written == size and storage.read_bytes("jobs/w/out.zip") == data


def test_writer_leaves_nothing_when_the_producer_fails(storage):
    with pytest.raises(RuntimeError, match="frame corrupt"), storage.writer("jobs/w/bad.zip") as out:
        out.write(b"x" * (17 * 2**20))  # a part is already uploaded when the producer fails
        raise RuntimeError("frame corrupt")
    assert not storage.exists("jobs/w/bad.zip")


def test_file_storage_links_a_file_on_its_filesystem_and_copies_one_from_another(tmp_path):
    store = FileStorage(tmp_path / "storage")
    frame = tmp_path / "0001.png"
    frame.write_bytes(b"pixels")
    store.put_file("jobs/j/frames/0001.png", frame)  # the folder's first file
    stored = store.local_path("jobs/j/frames/0001.png")
    assert stored.stat().st_ino == frame.stat().st_ino  # the same file: no copy, no new file
    frame.unlink()  # the caller lets its name go (the worker moves it into its frame cache)
    assert stored.read_bytes() == b"pixels" and not [p for p in stored.parent.iterdir() if p.name.startswith(".")]

    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:  # tmpfs: another filesystem, no link possible
        elsewhere = Path(other) / "0002.png"
        elsewhere.write_bytes(b"more pixels")
        store.put_file("jobs/j/frames/0002.png", elsewhere)
        copied = store.local_path("jobs/j/frames/0002.png")
        assert copied.read_bytes() == b"more pixels" and copied.stat().st_ino != elsewhere.stat().st_ino
    with pytest.raises(FileNotFoundError):
        store.put_file("jobs/j/frames/0003.png", tmp_path / "missing.png")
    assert sorted(p.name for p in stored.parent.iterdir()) == ["0001.png", "0002.png"]
