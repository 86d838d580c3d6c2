"""The schema's migrations on the real Postgres and on SQLite (the embedded default): an empty database upgrades
to head, rows written at the first revision survive the upgrade, the models and the migrations agree, a database
made before migrations is adopted, concurrent upgrades take turns, and workers wait for the revision they need."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, MetaData, insert, select, text

from farm.cli.health import CHECKS
from farm.config import load_settings
from farm.db import Database, make_engine
from farm.models import Chunk, Event, Frame, Job, JobBlob, StoredBlob
from farm.schema import BASELINE, SchemaNotReady, differences, revision, scripts, upgrade, wait_until_ready
from tests.conftest import PG_HOST

HEAD = scripts().get_current_head()


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database of this test's own: a new Postgres database, or a new SQLite file."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'farm.sqlite'}"
        return
    name = f"farm_mig_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{PG_HOST}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{PG_HOST}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture()
def engine(empty_db: str) -> Iterator[Engine]:
    engine = make_engine(empty_db)
    yield engine
    engine.dispose()


def test_empty_database_upgrades_to_head_and_matches_the_models(engine: Engine) -> None:
    assert revision(engine).current is None
    assert upgrade(engine) == (None, HEAD)
    state = revision(engine)
    assert state.ready and state.current == HEAD
    assert differences(engine) == []
    assert upgrade(engine) == (HEAD, HEAD)  # a second start changes nothing


def _rows_at_first_revision(engine: Engine) -> None:
    """What a farm running revision 0001 had stored: a finished job with a chunk, a frame, a blob and its trail,
    written with the tables as that revision made them (not today's models)."""
    tables = MetaData()
    with engine.begin() as conn:
        tables.reflect(conn)
        now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        conn.execute(
            insert(tables.tables["jobs"]),
            {
                "id": "job-at-rev-1", "name": "old shot", "status": "COMPLETED", "owner": "ana", "created_at": now,
                "updated_at": now, "finished_at": now, "version": 7, "source_key": "blobs/" + "a" * 64,
                "source_sha256": "a" * 64, "source_kind": "project", "main": "shot.blend", "scene": {"scene": "S"},
                "frame_start": 1, "frame_end": 1, "chunk_size": 1, "output_format": "PNG", "device": "CPU",
                "priority": 3, "queue": "farm", "frames_rendered": 1, "render_ms_total": 1234.5,
                "asset_key": "jobs/job-at-rev-1/old.zip", "asset_filename": "old.zip", "asset_size": 99,
            },
        )  # fmt: skip
        chunk_id = conn.execute(
            insert(tables.tables["chunks"]).returning(tables.tables["chunks"].c.id),
            {"job_id": "job-at-rev-1", "index": 0, "frame_start": 1, "frame_end": 1, "status": "DONE", "attempts": 1},
        ).scalar_one()
        conn.execute(
            insert(tables.tables["frames"]),
            {"job_id": "job-at-rev-1", "chunk_id": chunk_id, "frame": 1, "status": "DONE", "size": 42},
        )
        conn.execute(
            insert(tables.tables["blobs"]), {"sha256": "a" * 64, "size": 10, "created_at": now, "last_used_at": now}
        )
        conn.execute(insert(tables.tables["job_blobs"]), {"job_id": "job-at-rev-1", "sha256": "a" * 64})
        conn.execute(
            insert(tables.tables["events"]),
            {"created_at": now, "kind": "job", "subject": "job-at-rev-1", "job_id": "job-at-rev-1", "new": "QUEUED"},
        )


def _check_rows_survived(url: str) -> None:
    db = Database(url)
    try:
        with db.session() as session:
            job = session.get(Job, "job-at-rev-1")
            assert job is not None
            kept = (job.name, job.status, job.owner, job.version, job.asset_size)
            assert kept == ("old shot", "COMPLETED", "ana", 7, 99)
            assert job.scene == {"scene": "S"} and job.render_ms_total == 1234.5
            assert job.deleted_at is None and job.storage_bytes is None  # the new columns, empty for old rows
            assert [c.status for c in job.chunks] == ["DONE"]
            assert session.scalars(select(Frame.size)).all() == [42]
            assert session.scalars(select(StoredBlob.size)).all() == [10]
            assert session.scalars(select(JobBlob.job_id)).all() == ["job-at-rev-1"]
            assert session.scalars(select(Event.new)).all() == ["QUEUED"]
            assert session.scalars(select(Chunk.job_id)).all() == ["job-at-rev-1"]
    finally:
        db.engine.dispose()


def test_rows_written_at_the_first_revision_survive_the_upgrade(engine: Engine, empty_db: str) -> None:
    assert upgrade(engine, BASELINE) == (None, BASELINE)
    _rows_at_first_revision(engine)
    assert upgrade(engine) == (BASELINE, HEAD)
    _check_rows_survived(empty_db)
    assert differences(engine) == []


def test_a_database_made_before_migrations_is_adopted_as_the_first_revision(engine: Engine, empty_db: str) -> None:
    """Farms that ran before migrations have today's first-revision tables and no `alembic_version`."""
    upgrade(engine, BASELINE)
    _rows_at_first_revision(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    assert revision(engine).current is None
    assert upgrade(engine) == (None, HEAD)
    _check_rows_survived(empty_db)


def test_processes_starting_at_once_upgrade_once(empty_db: str) -> None:
    """Web processes and CLIs starting together: each upgrade waits for the lock, then finds the work done."""
    results: list[object] = []

    def start() -> None:
        engine = make_engine(empty_db)
        try:
            results.append(upgrade(engine))
        except Exception as exc:  # reported below: any failure fails the test
            results.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(map(str, results)) == sorted([str((None, HEAD))] + [str((HEAD, HEAD))] * 3)


def test_workers_wait_for_the_revision_they_need(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    upgrade(engine, BASELINE)
    with pytest.raises(SchemaNotReady, match=rf"at revision {BASELINE}; this code needs {HEAD}.*gave up after"):
        wait_until_ready(engine, 0.5, poll=0.1, who="worker w1")
    caplog.set_level(logging.WARNING, logger="farm.schema")
    upgrader = threading.Timer(1.0, upgrade, [engine])
    upgrader.start()
    try:
        state = wait_until_ready(engine, 60, poll=0.2, who="worker w2")
    finally:
        upgrader.join()
    assert state.current == HEAD
    assert "worker w2 waits for the database schema: the database is at revision 0001" in caplog.text


def test_a_revision_this_code_does_not_know_is_refused_at_once(engine: Engine) -> None:
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff_from_newer_code'"))
    with pytest.raises(SchemaNotReady, match="does not know"):
        wait_until_ready(engine, 30, poll=0.1)


def test_farm_db_commands_and_the_schema_check(empty_db: str, tmp_path: Path) -> None:
    env = {"FARM_DATABASE_URL": empty_db, "FARM_INSTANCE_DIR": str(tmp_path / "instance"), "PATH": "/usr/bin:/bin"}

    def farm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "farm", *args], env=env, capture_output=True, text=True)

    schema_check = dict(CHECKS)["schema"]
    settings = load_settings(env, dotenv_path=None)
    with pytest.raises(SchemaNotReady, match="run `farm db upgrade`"):
        schema_check(settings)
    before = farm("db", "current")
    assert before.returncode == 1
    assert before.stdout.strip() == f"database at revision none (empty); this code needs {HEAD}: run `farm db upgrade`"
    up = farm("db", "upgrade")
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == f"database upgraded from revision none (empty) to {HEAD}"
    again = farm("db", "upgrade")
    assert again.stdout.strip() == f"database already at revision {HEAD} (current)"
    after = farm("db", "current")
    assert (after.returncode, after.stdout.strip()) == (0, f"database at revision {HEAD} (current)")
    assert schema_check(settings) == f"the database is at revision {HEAD} (current)"


def test_workers_paces_of_jobs_made_before_them_come_from_their_frames(engine: Engine) -> None:
    """0008 sums each worker's DONE frames of each job into `worker_paces`, which ETAs read from then on."""
    upgrade(engine, "0007")
    _rows_at_first_revision(engine)  # its one DONE frame names no worker: no pace
    tables = MetaData()
    with engine.begin() as conn:
        tables.reflect(conn)
        chunk_id = conn.execute(select(tables.tables["chunks"].c.id)).scalar_one()
        conn.execute(
            insert(tables.tables["frames"]),
            [
                {"job_id": "job-at-rev-1", "chunk_id": chunk_id, "frame": n, "status": status, "worker": "w@x",
                 "render_time_ms": ms}
                for n, status, ms in ((2, "DONE", 1000.0), (3, "DONE", 3000.0), (4, "FAILED", 9000.0))
            ],
        )  # fmt: skip
    upgrade(engine)
    with engine.connect() as conn:
        paces = conn.execute(text("SELECT job_id, worker, frames, render_ms_total FROM worker_paces")).all()
    assert [tuple(row) for row in paces] == [("job-at-rev-1", "w@x", 2, 4000.0)]
