"""Packaging ends: its Celery time limits and a cap on its attempts that holds across the janitor's re-sends, on the
real Postgres (tests/e2e/test_packaging_worker.py runs the same through a real `farm worker`)."""

from __future__ import annotations

import pytest

from farm.celery_app import make_celery
from farm.config import ConfigError, load_settings
from farm.db import Database
from farm.jobs import states
from farm.messaging.dispatch import PACKAGE_JOB, RENDER_CHUNK
from farm.models import Job, JobStatus
from farm.storage import open_storage
from tests.rows import make_job, render_frame
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
