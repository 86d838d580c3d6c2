"""Deleting jobs, retention and storage used, against the real Postgres and S3 (a moto server over HTTP): what a
delete removes (every file under the job's prefix, project files no other job uses, its rows) and keeps (one
event, other jobs' files), an active job canceled first and purged by the janitor once it settled, FARM_RETENTION_DAYS,
each job's and the farm's storage used, and abandoned multipart uploads aborted."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from farm.celery_app import make_celery
from farm.clock import database_now
from farm.jobs import states, storage_usage
from farm.messaging.janitor import Janitor, Sweep
from farm.models import Chunk, ChunkStatus, Event, Frame, Job, JobBlob, JobStatus, StoredBlob, TaskRecord, utcnow
from farm.projects import blob_key
from farm.storage import open_storage
from farm.storage.s3 import S3Storage
from tests.rows import add_job, claim_first_chunk


@pytest.fixture()
def settings(prod_settings):  # type: ignore[no-untyped-def]
    return dataclasses.replace(prod_settings, worker_timeout_seconds=5.0)


@pytest.fixture()
def storage(settings):  # type: ignore[no-untyped-def]
    storage = open_storage(settings)
    storage.ensure_ready()
    return storage


def janitor(database, settings, **changes):  # type: ignore[no-untyped-def]
    settings = dataclasses.replace(settings, **changes)
    return Janitor(database, make_celery(settings), settings, name="janitor@test")


def listing(storage: S3Storage, prefix: str) -> dict[str, int]:
    """Every object under `prefix`, read from S3 itself: what is really stored."""
    pages = storage.client.get_paginator("list_objects_v2").paginate(
        Bucket=storage.bucket, Prefix=f"{storage.prefix}/{prefix}"
    )
    return {o["Key"].removeprefix(f"{storage.prefix}/"): o["Size"] for page in pages for o in page.get("Contents", [])}


def job_with_files(database, storage, *, blobs: list[str], status: JobStatus = JobStatus.COMPLETED, ago=None):  # type: ignore[no-untyped-def]
    """A job as a finished render leaves it: frames, thumbnails, a log, the zip and a movie beside it in storage,
    the project files it uses, a task record and its event trail."""
    with database.session() as session:
        job_id = add_job(session, 2, 1, name=f"del-{uuid.uuid4().hex[:6]}")
        for sha in blobs:
            if session.get(StoredBlob, sha) is None:
                storage.put_bytes(blob_key(sha), sha.encode())
                session.add(StoredBlob(sha256=sha, size=len(sha)))
            session.add(JobBlob(job_id=job_id, sha256=sha))
        session.add(TaskRecord(task_id=uuid.uuid4().hex, name="render_chunk", state="SUCCESS", job_id=job_id))
        states.job_created(session, session.get(Job, job_id), reason="test", actor="ana")
        finished = utcnow() - (ago or timedelta(0))
        session.execute(
            update(Job).where(Job.id == job_id).values(status=status, finished_at=finished, updated_at=finished)
        )
        session.execute(update(Chunk).where(Chunk.job_id == job_id).values(status=ChunkStatus.DONE))
    files = {
        f"jobs/{job_id}/frames/0001-abc.png": b"p" * 1000,
        f"jobs/{job_id}/frames/0001-abc.thumb.jpg": b"t" * 100,
        f"jobs/{job_id}/logs/chunk-0000-attempt-1.log": b"l" * 10,
        f"jobs/{job_id}/shot-0001-0002.zip": b"z" * 2000,
        f"jobs/{job_id}/shot-0001-0002.mp4": b"m" * 500,
    }
    for key, data in files.items():
        storage.put_bytes(key, data)
    return job_id, sum(map(len, files.values()))


def rows_of(database, job_id):  # type: ignore[no-untyped-def]
    with database.session() as session:
        return {
            table.__tablename__: session.scalar(select(func.count()).select_from(table).where(table.job_id == job_id))
            for table in (Chunk, Frame, JobBlob, TaskRecord, Event)
        } | {"jobs": session.scalar(select(func.count()).select_from(Job).where(Job.id == job_id))}


def test_delete_removes_the_jobs_files_rows_and_project_files_no_other_job_uses(client, database, storage):
    shared, own = uuid.uuid4().hex * 2, uuid.uuid4().hex * 2
    job_id, _ = job_with_files(database, storage, blobs=[shared, own])
    other_id, _ = job_with_files(database, storage, blobs=[shared])
    assert len(listing(storage, f"jobs/{job_id}/")) == 5

    answer = client.delete(f"/api/jobs/{job_id}")
    assert (answer.status_code, answer.data) == (204, b"")

    assert listing(storage, f"jobs/{job_id}/") == {}
    assert not storage.exists(blob_key(own)) and storage.exists(blob_key(shared))
    assert len(listing(storage, f"jobs/{other_id}/")) == 5  # the other job keeps everything
    assert rows_of(database, job_id) == {
        "chunks": 0,
        "frames": 0,
        "job_blobs": 0,
        "task_records": 0,
        "events": 1,
        "jobs": 0,
    }
    with database.session() as session:
        assert session.get(StoredBlob, own) is None and session.get(StoredBlob, shared) is not None
        event = session.scalars(select(Event).where(Event.job_id == job_id)).one()
    who = client.get("/api/me").get_json()["user"]["name"]  # the signed-in admin who deleted it
    assert (event.kind, event.old, event.new, event.actor) == ("job", "COMPLETED", "DELETED", who)
    assert event.reason == "deleted by user" and abs(event.created_at - utcnow()) < timedelta(minutes=1)

    for path in (f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/frames", f"/api/jobs/{job_id}/asset"):
        assert client.get(path).status_code == 404
    again = client.delete(f"/api/jobs/{job_id}")
    assert again.status_code == 404 and again.json["error"]["code"] == "not_found"
    assert client.get(f"/api/jobs/{other_id}").status_code == 200
    assert client.delete("/api/jobs/" + "x" * 300).status_code == 404


def test_deleting_an_active_job_cancels_it_and_the_janitor_purges_it_once_settled(client, database, storage, settings):
    job_id, _ = job_with_files(database, storage, blobs=[uuid.uuid4().hex * 2], status=JobStatus.QUEUED)
    with database.session() as session:
        session.execute(update(Chunk).where(Chunk.job_id == job_id).values(status=ChunkStatus.QUEUED))
    claim_first_chunk(database, job_id)  # chunk 0 renders; chunk 1 waits

    assert client.delete(f"/api/jobs/{job_id}").status_code == 204
    assert client.get(f"/api/jobs/{job_id}").status_code == 404
    assert job_id not in [j["id"] for j in client.get("/api/jobs?limit=500").json["jobs"]]
    with database.session() as session:
        job = session.get(Job, job_id)
        assert job.status == JobStatus.CANCELING and job.deleted_at is not None
        trail = [
            (e.old, e.new)
            for e in session.scalars(
                select(Event).where(Event.job_id == job_id, Event.kind == "job").order_by(Event.id)
            )
        ]
        chunks = [c.status for c in session.scalars(select(Chunk).where(Chunk.job_id == job_id).order_by(Chunk.index))]
    assert trail[-2:] == [("RENDERING", "CANCELING"), ("CANCELING", "DELETED")]
    assert chunks == [ChunkStatus.RENDERING, ChunkStatus.CANCELED]

    sweeper = janitor(database, settings)
    assert job_id not in sweeper.sweep().jobs_purged  # its renderer is still stopping
    storage.put_bytes(f"jobs/{job_id}/frames/0002-late.png", b"late")  # the last frame it stored while stopping
    with database.session() as session:
        chunk = session.scalars(select(Chunk).where(Chunk.job_id == job_id, Chunk.index == 0)).one()
        states.finish_chunk(session, chunk, ChunkStatus.CANCELED, worker="w@test", reason="canceled")
        assert states.settle_cancel(session, job_id, actor="w@test")
    assert job_id not in sweeper.sweep().jobs_purged  # quiet for less than a worker timeout
    with database.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(updated_at=utcnow() - timedelta(minutes=1)))
    assert job_id in sweeper.sweep().jobs_purged

    assert listing(storage, f"jobs/{job_id}/") == {}
    assert rows_of(database, job_id) | {"events": None} == {
        "chunks": 0, "frames": 0, "job_blobs": 0, "task_records": 0, "events": None, "jobs": 0
    }  # fmt: skip
    with database.session() as session:
        kept = [(e.kind, e.new) for e in session.scalars(select(Event).where(Event.job_id == job_id))]
    assert kept == [("job", "DELETED")]


def test_retention_deletes_jobs_that_finished_that_long_ago(database, storage, settings):
    old_id, _ = job_with_files(database, storage, blobs=[uuid.uuid4().hex * 2], ago=timedelta(days=3))
    recent_id, _ = job_with_files(database, storage, blobs=[], ago=timedelta(hours=20))
    running_id, _ = job_with_files(database, storage, blobs=[], status=JobStatus.RENDERING, ago=timedelta(days=9))

    assert old_id not in janitor(database, settings, retention_days=None).sweep().jobs_retired  # unset: kept forever
    done = janitor(database, settings, retention_days=2.0).sweep()
    assert old_id in done.jobs_retired and recent_id not in done.jobs_retired and running_id not in done.jobs_retired

    assert listing(storage, f"jobs/{old_id}/") == {} and rows_of(database, old_id)["jobs"] == 0
    with database.session() as session:
        event = session.scalars(select(Event).where(Event.job_id == old_id)).one()
    assert (event.new, event.actor, event.reason) == ("DELETED", "janitor@test", "finished over 2 days ago")
    assert len(listing(storage, f"jobs/{recent_id}/")) == 5 and len(listing(storage, f"jobs/{running_id}/")) == 5


def test_storage_used_per_job_and_for_the_farm(client, database, storage, settings):
    job_id, size = job_with_files(database, storage, blobs=[uuid.uuid4().hex * 2])
    assert client.get(f"/api/jobs/{job_id}").json["job"]["storage"] == {"bytes": None, "measured_at": None}

    sweeper = janitor(database, settings)
    assert job_id in sweeper.sweep().jobs_measured
    measured = client.get(f"/api/jobs/{job_id}").json["job"]["storage"]
    assert measured["bytes"] == size == sum(listing(storage, f"jobs/{job_id}/").values())
    assert job_id not in sweeper.sweep().jobs_measured  # unchanged since: not listed again

    storage.put_bytes(f"jobs/{job_id}/frames/0002-def.png", b"q" * 4000)  # it renders on (a retry, say)
    with database.session() as session:
        states.touch_job(session, job_id)
        session.execute(update(Job).where(Job.id == job_id).values(storage_measured_at=utcnow() - timedelta(minutes=2)))
    assert job_id in sweeper.sweep().jobs_measured
    assert client.get(f"/api/jobs/{job_id}").json["job"]["storage"]["bytes"] == size + 4000

    with database.session() as session:  # due again: the first janitor to take it lists it, the others do not
        states.touch_job(session, job_id)
        session.execute(update(Job).where(Job.id == job_id).values(storage_measured_at=utcnow() - timedelta(minutes=2)))
        now = database_now(session)
        assert storage_usage.take(session, job_id, now) and not storage_usage.take(session, job_id, now)
    assert job_id not in sweeper.sweep().jobs_measured

    farm = client.get("/api/storage").json
    with database.session() as session:
        jobs_bytes = session.scalar(select(func.sum(Job.storage_bytes)).where(Job.deleted_at.is_(None)))
        blob_bytes = session.scalar(select(func.sum(StoredBlob.size)))
    assert farm["jobs_bytes"] == jobs_bytes and farm["project_files_bytes"] == blob_bytes
    assert farm["total_bytes"] == jobs_bytes + blob_bytes and farm["jobs_bytes"] >= size + 4000


def test_abandoned_multipart_uploads_are_aborted_after_a_while(database, storage, settings):
    """moto reports every upload as begun on 2010-11-10 (its listing hard-codes that date), so the age limit is
    set on either side of that day: the farm goes by the date S3 reports."""
    key = f"jobs/{uuid.uuid4()}/shot.zip"
    upload = storage.client.create_multipart_upload(Bucket=storage.bucket, Key=storage._key(key))["UploadId"]

    def uploads() -> set[str]:
        return {u["UploadId"] for u in storage.client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", [])}

    initiated = datetime(2010, 11, 10, 20, 48, 33, tzinfo=UTC)
    younger = (utcnow() - initiated + timedelta(days=1)).total_seconds() / 3600

    def look(hours: float) -> list[str]:
        """The janitor's step itself: a sweep runs it only every UPLOADS_EVERY (its first ten minutes after start)."""
        done = Sweep()
        janitor(database, settings, multipart_abort_hours=hours).abort_stale_uploads(utcnow(), done)
        return done.uploads_aborted

    assert key not in look(younger)
    assert upload in uploads()
    assert key in look(24.0)
    assert upload not in uploads()


def test_a_delete_aborts_the_zip_upload_in_progress(client, database, storage):
    job_id, _ = job_with_files(database, storage, blobs=[], status=JobStatus.FAILED)
    key = storage._key(f"jobs/{job_id}/shot-0001-0002.zip")
    upload = storage.client.create_multipart_upload(Bucket=storage.bucket, Key=key)["UploadId"]
    assert client.delete(f"/api/jobs/{job_id}").status_code == 204
    left = {u["UploadId"] for u in storage.client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", [])}
    assert upload not in left
