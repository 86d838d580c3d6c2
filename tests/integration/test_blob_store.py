"""The blob store's upkeep: blobs no job has used for FARM_BLOB_TTL_DAYS go (from storage and the table), except
those an active job renders from; a machine's blob cache drops only blobs no project folder links."""

import hashlib
import os
import time
from datetime import timedelta

from farm.models import Job, JobStatus, StoredBlob, utcnow
from farm.projects import Blob, BlobCache, Manifest, blob_key, blob_store
from farm.storage import open_storage
from tests.rows import add_job


def stored(session, storage, data: bytes, days_ago: float) -> str:  # type: ignore[no-untyped-def]
    sha = hashlib.sha256(data).hexdigest()
    storage.put_bytes(blob_key(sha), data)
    when = utcnow() - timedelta(days=days_ago)
    session.add(StoredBlob(sha256=sha, size=len(data), created_at=when, last_used_at=when))
    return sha


def test_the_janitor_deletes_blobs_unused_past_their_ttl_unless_an_active_job_needs_them(database, prod_settings):
    storage = open_storage(prod_settings)
    storage.ensure_ready()
    with database.session() as session:
        fresh = stored(session, storage, os.urandom(64), days_ago=1)
        old = stored(session, storage, os.urandom(64), days_ago=40)
        needed = stored(session, storage, os.urandom(64), days_ago=40)
        done = stored(session, storage, os.urandom(64), days_ago=40)
        active, finished = add_job(session, 1, 1), add_job(session, 1, 1)
        session.get(Job, finished).status = JobStatus.COMPLETED
        session.flush()
        blob_store.use(session, active, [needed])
        blob_store.use(session, finished, [done])
        for sha in (needed, done):  # used 40 days ago, as far as the TTL goes
            session.get(StoredBlob, sha).last_used_at = utcnow() - timedelta(days=40)
    with database.session() as session:
        expired = blob_store.expire(session, storage, ttl_days=30)
    assert old in expired and done in expired and fresh not in expired and needed not in expired
    with database.session() as session:
        assert session.get(StoredBlob, old) is None and session.get(StoredBlob, needed) is not None
    assert not storage.exists(blob_key(old)) and storage.exists(blob_key(fresh)) and storage.exists(blob_key(needed))


def test_the_blob_cache_trims_only_blobs_no_project_links(tmp_path):
    cache = BlobCache(tmp_path / "cache")
    blobs = []
    for i in range(3):
        data = bytes([i]) * 1000
        source = tmp_path / f"f{i}"
        source.write_bytes(data)
        blob = Blob(hashlib.sha256(data).hexdigest(), len(data))
        cache.adopt(source, blob)
        source.unlink()  # the caller's copy: the cache holds its own link
        blobs.append(blob)
    os.link(cache.path(blobs[0].sha256), tmp_path / "linked-into-a-project")
    old = time.time_ns() - 7200 * 10**9
    for blob in blobs:
        os.utime(cache.path(blob.sha256), ns=(old, 0))  # last used two hours ago
    removed = cache.trim(max_bytes=1000)
    assert blobs[0].sha256 not in removed  # a project folder still links it
    assert len(removed) == 2 and not cache.has(blobs[1]) and cache.has(blobs[0])
    assert cache.trim(max_bytes=0) == []  # nothing left that nobody links


def test_a_blob_written_through_a_project_is_fetched_again(tmp_path, prod_settings):
    """A Blender that rewrites a project file in place (as root, the read-only mode does not stop it) changes the
    cache's blob too, through the hard link: the next project must not get the changed bytes."""
    storage = open_storage(prod_settings)
    storage.ensure_ready()
    data = os.urandom(4096)
    blob = Blob(hashlib.sha256(data).hexdigest(), len(data))
    storage.put_bytes(blob_key(blob.sha256), data)
    cache = BlobCache(tmp_path / "cache")
    manifest = Manifest("scene.blend", {"scene.blend": blob})
    first = cache.build(storage, manifest, tmp_path / "job-1")
    first.chmod(0o644)
    with open(first, "r+b") as fh:  # in place: same inode as the cache's copy
        fh.write(b"changed!")
    assert not cache.has(blob)
    second = cache.build(storage, manifest, tmp_path / "job-2")
    assert second.read_bytes() == data and cache.path(blob.sha256).read_bytes() == data
