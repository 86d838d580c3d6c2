"""Packaging ends: its Celery time limits, a cap on its attempts that holds across the janitor's re-sends, and jobs
whose frames can never be zipped. The end-to-end tests run a real `farm worker` (its janitor included) on a private
Postgres, the machine's Redis and the moto S3 server behind a proxy that can hang like a stuck S3."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from farm.celery_app import make_celery
from farm.config import ConfigError, load_settings
from farm.db import Database, init_db
from farm.jobs import states
from farm.messaging.dispatch import PACKAGE_JOB, RENDER_CHUNK, send_packaging
from farm.models import Event, Job, JobStatus, Worker
from farm.storage import open_storage
from tests.helpers import FarmProcesses, holds_for, wait_until
from tests.rows import add_job, make_job, render_frame, store_frames
from tests.servers import CuttableProxy, PrivatePostgres
from workers import tasks  # noqa: F401  (registers the farm's tasks with every app made here)
from workers.context import WorkerContext
from workers.frame_cache import FrameCache
from workers.packaging import start_packaging


def test_the_packaging_task_carries_its_time_limits_from_the_settings(tmp_path):
    env = {"FARM_INSTANCE_DIR": str(tmp_path)}
    default = make_celery(load_settings(env, dotenv_path=None))
    task = default.tasks[PACKAGE_JOB]
    assert (task.soft_time_limit, task.time_limit) == (4 * 3600.0, 4 * 3600.0 + 600)
    assert default.tasks[RENDER_CHUNK].soft_time_limit is None  # a chunk has FARM_FRAME_TIMEOUT_SECONDS instead
    tight = make_celery(
        load_settings(dict(env, FARM_PACKAGING_SOFT_SECONDS="90", FARM_PACKAGING_HARD_SECONDS="120"), dotenv_path=None)
    )
    assert (tight.tasks[PACKAGE_JOB].soft_time_limit, tight.tasks[PACKAGE_JOB].time_limit) == (90.0, 120.0)
    with pytest.raises(ConfigError, match=r"FARM_PACKAGING_HARD_SECONDS \(90.0\) must be above FARM_PACKAGING_SOFT"):
        load_settings(dict(env, FARM_PACKAGING_SOFT_SECONDS="90", FARM_PACKAGING_HARD_SECONDS="90"), dotenv_path=None)


def packaging(database: Database, frames: int = 2) -> str:
    """A job with every frame rendered, moved to PACKAGING as a packager's first attempt moves it."""
    job_id = make_job(database, frames, frames, name="runs")
    for frame in range(1, frames + 1):
        render_frame(database, job_id, frame)
    with database.session() as session:
        assert states.move_job(session, job_id, JobStatus.PACKAGING, reason="all frames rendered", actor="test")
    return job_id


def job_row(database: Database, job_id: str) -> Job:
    with database.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_attempts_are_counted_in_the_database_across_resends_and_a_retry_starts_afresh(database):
    job_id = packaging(database)
    with database.session() as session:
        assert states.restart_packaging(session, job_id, attempts=3, actor="janitor-a") == 2
    with database.session() as session:  # a resumed packager that had reached UPLOADING builds the zip again
        assert states.move_job(session, job_id, JobStatus.UPLOADING, actor="test")
        assert states.restart_packaging(session, job_id, attempts=3, actor="janitor-b") == 3
    assert job_row(database, job_id).status == JobStatus.PACKAGING
    with database.session() as session:
        assert not states.packaging_failed(session, job_id, "boom", attempts=4, actor="w")
    assert job_row(database, job_id).error == "packaging attempt 3 of 4 failed: boom"
    with database.session() as session:  # the third attempt died without a word: no fourth under a cap of 3
        assert states.restart_packaging(session, job_id, attempts=3, actor="janitor-a") is None
    job = job_row(database, job_id)
    assert job.status == JobStatus.FAILED and job.error.startswith("packaging failed 3 times; the last one stopped")
    with database.session() as session:  # not resumed again, and nothing to record for a job no packager has
        assert states.restart_packaging(session, job_id, attempts=3, actor="janitor-a") is None
        assert not states.packaging_failed(session, job_id, "late", attempts=3, actor="w")

    with database.session() as session:
        states.retry_job(session, job_id, actor="user")
        assert states.move_job(session, job_id, JobStatus.PACKAGING, reason="all frames rendered", actor="w")
        assert states.packaging_attempts(session, job_id) == 1
        assert states.packaging_failed(session, job_id, "boom again", attempts=1, actor="w")
    job = job_row(database, job_id)
    assert (job.status, job.error) == (JobStatus.FAILED, "packaging failed 1 times; last: boom again")


def test_celerys_retry_goes_on_with_its_attempt_and_the_janitors_resume_begins_another(
    prod_settings, database, tmp_path
):
    ctx = WorkerContext(prod_settings, database, open_storage(prod_settings), [], FrameCache(tmp_path, 0))
    job_id = make_job(database, 2, 2, name="retried")
    for frame in (1, 2):
        render_frame(database, job_id, frame)
    with database.session() as session:  # an outage hit the first attempt before it moved the job
        assert states.packaging_attempts(session, job_id) == 0
    for _ in range(2):  # so Celery's retry moves it, and its next retry goes on with it
        assert start_packaging(ctx, job_id, "w", resume=False, retried=True) is not None
        assert job_row(database, job_id).status == JobStatus.PACKAGING
        with database.session() as session:
            assert states.packaging_attempts(session, job_id) == 1
    assert start_packaging(ctx, job_id, "janitor", resume=True, retried=False) is not None
    assert start_packaging(ctx, job_id, "w", resume=False, retried=False) is None  # a duplicate first send
    with database.session() as session:
        assert states.packaging_attempts(session, job_id) == 2


# --- a real worker ------------------------------------------------------------------------------------------------

SOFT_SECONDS = 2


@pytest.fixture(scope="module")
def packager(redis_url: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """One `farm worker` with a 2 s packaging soft limit, 2 packaging attempts and a janitor that resumes stalled
    packaging after 3 s; its S3 goes through a proxy the tests can hang."""
    postgres = PrivatePostgres()
    proxy = CuttableProxy(int(s3_endpoint.rsplit(":", 1)[1]))
    run = uuid.uuid4().hex[:8]
    env = {
        "FARM_INSTANCE_DIR": str(tmp_path_factory.mktemp("instance")),
        "FARM_DATABASE_URL": postgres.url,
        "FARM_BROKER_URL": redis_url,
        "FARM_RESULT_BACKEND": f"db+{postgres.url}",
        "FARM_STORAGE_URL": f"s3://packaging-{run}/renders",
        "FARM_S3_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}",
        "FARM_QUEUE": f"packaging-{run}",
        "FARM_HEARTBEAT_SECONDS": "1",
        "FARM_WORKER_TIMEOUT_SECONDS": "3",
        "FARM_JANITOR_SECONDS": "1",
        "FARM_PACKAGING_SOFT_SECONDS": str(SOFT_SECONDS),
        "FARM_PACKAGING_HARD_SECONDS": "60",
        "FARM_PACKAGING_ATTEMPTS": "2",
        "FARM_WARM_BLENDER": "0",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    settings = load_settings(dict(env, FARM_S3_ENDPOINT_URL=s3_endpoint), dotenv_path=None)
    database = Database(settings.database_url)
    init_db(database.engine)
    storage = open_storage(settings)  # straight to moto: the test's own writes never hang
    storage.ensure_ready()
    procs = FarmProcesses(env, tmp_path_factory.mktemp("logs"))
    procs._start("worker", ["worker", "--name", "packager@test"])

    def online() -> bool:
        with database.session() as session:
            return session.scalar(select(Worker.status).where(Worker.hostname == "packager@test")) == "ONLINE"

    try:
        wait_until(online, timeout=90, what="the packaging worker to register")
        yield SimpleNamespace(
            database=database,
            storage=storage,
            proxy=proxy,
            procs=procs,
            celery=make_celery(settings),
            queue=env["FARM_QUEUE"],
        )
    finally:
        proxy.flow()
        procs.stop_all()
        proxy.close()
        database.engine.dispose()
        postgres.stop()


def stored_job(farm: SimpleNamespace, frames: int) -> tuple[str, dict[int, str]]:
    """A job whose frames are stored and recorded DONE, still RENDERING as its last chunk left it; returns its id
    and each frame's storage key."""
    with farm.database.session() as session:
        job_id = add_job(session, frames, frames, name="zip-me", queue=farm.queue)
    stored = store_frames(farm.storage, farm.database, job_id, frames)
    return job_id, {frame: key for frame, (_, key) in stored.items()}


def attempts_of(farm: SimpleNamespace, job_id: str) -> list[str | None]:
    with farm.database.session() as session:
        return list(
            session.scalars(
                select(Event.reason)
                .where(Event.job_id == job_id, Event.kind == "job", Event.new == JobStatus.PACKAGING)
                .order_by(Event.id)
            )
        )


def ended(farm: SimpleNamespace, job_id: str, timeout: float) -> Job:
    return wait_until(
        lambda: (job := job_row(farm.database, job_id)).status in states.TERMINAL_JOB and job,
        timeout=timeout,
        what=f"job {job_id} to end",
    )


def test_frames_that_can_never_be_zipped_fail_the_job_with_why_and_are_not_retried(packager):
    missing, missing_keys = stored_job(packager, 3)
    packager.storage.delete(missing_keys[2])
    corrupt, keys = stored_job(packager, 2)
    packager.storage.put_bytes(keys[1], b"not the rendered frame", "image/png")
    for job_id in (missing, corrupt):
        send_packaging(packager.celery, job_id, queue=packager.queue)

    job = ended(packager, missing, timeout=60)
    assert (job.status, job.error) == (JobStatus.FAILED, f"frame 2 is missing from storage ({missing_keys[2]})")
    assert job.asset_key is None
    job = ended(packager, corrupt, timeout=60)
    assert (job.status, job.error) == (JobStatus.FAILED, "frame 1 in storage does not match its recorded sha256")

    def never_packaged_again() -> bool:
        assert attempts_of(packager, missing) == attempts_of(packager, corrupt) == ["all frames rendered"]
        return job_row(packager.database, missing).status == JobStatus.FAILED

    holds_for(never_packaged_again, seconds=5, what="failed jobs left alone past the janitor's stall timeout (3 s)")


def test_a_soft_time_limit_ends_an_attempt_with_its_reason_and_the_attempts_are_capped(packager):
    """S3 hangs: each attempt waits on a frame's download until its soft limit ends it (not waiting for the stuck
    download), records why, and the janitor resumes it; after FARM_PACKAGING_ATTEMPTS (2) the job is FAILED."""
    job_id, _ = stored_job(packager, 2)
    packager.proxy.stall()
    started = time.monotonic()
    send_packaging(packager.celery, job_id, queue=packager.queue)

    first = wait_until(
        lambda: (job := job_row(packager.database, job_id)).error and job, timeout=30, what="the first attempt's end"
    )
    soft = f"it ran past its soft time limit of {SOFT_SECONDS} s (FARM_PACKAGING_SOFT_SECONDS)"
    assert (first.status, first.error) == (JobStatus.PACKAGING, f"packaging attempt 1 of 2 failed: {soft}")
    job = ended(packager, job_id, timeout=60)
    assert (job.status, job.error) == (JobStatus.FAILED, f"packaging failed 2 times; last: {soft}")
    assert time.monotonic() - started < 40  # each attempt ended at its soft limit, far before the hard one (60 s)
    assert attempts_of(packager, job_id) == ["all frames rendered", "packaging attempt 2 of 2"]
    assert not packager.storage.exists(f"jobs/{job_id}/zip-me-0001-0002.zip")
    packager.proxy.flow()

    def stays_failed() -> bool:
        assert len(attempts_of(packager, job_id)) == 2
        return job_row(packager.database, job_id).status == JobStatus.FAILED

    holds_for(stays_failed, seconds=5, what="the FAILED job staying FAILED while S3 answers and the janitor sweeps")
