"""Fixtures on real parts: the machine's Postgres (a fresh database per run) and Redis (a private queue per run),
a moto S3 server over HTTP, real Blender, and real `farm web` / `farm worker` processes."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import redis
from flask.globals import app_ctx
from sqlalchemy import Connection
from sqlalchemy.orm import scoped_session, sessionmaker

from farm.blender.launcher import SCRIPTS, run_script
from farm.config import Settings, load_settings
from farm.db import Database, init_db
from tests.helpers import HTTP, FarmProcesses, free_port, make_user, signed_in, wait_for_status

PG_HOST = os.environ.get("FARM_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("FARM_TEST_REDIS", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:10]
E2E = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/e2e is `slow` (real processes and Blender): `pytest -m "not slow"` leaves it out."""
    for item in items:
        if item.path.is_relative_to(E2E):
            item.add_marker(pytest.mark.slow)


def _admin() -> psycopg.Connection:
    return psycopg.connect(f"{PG_HOST}/postgres", autocommit=True)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A database of its own for this test run, dropped at the end."""
    name = f"farm_test_{RUN_ID}"
    try:
        conn = _admin()
    except psycopg.OperationalError as exc:
        pytest.fail(f"Postgres at {PG_HOST} does not answer: {exc}")
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    yield f"{PG_HOST}/{name}"
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The machine's Redis; every queue a test uses has RUN_ID in its name and is deleted at the end."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis at {REDIS_URL} does not answer: {exc}")
    yield REDIS_URL
    for key in client.scan_iter(f"*{RUN_ID}*"):
        client.delete(key)
    client.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto in server mode: a real HTTP S3 endpoint that workers in other processes reach too."""
    from moto.server import ThreadedMotoServer

    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def prod_env(pg_url: str, redis_url: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The production configuration from the contract: Redis broker, Postgres results and tables, S3 storage."""
    instance = tmp_path_factory.mktemp("instance")
    return {
        "FARM_INSTANCE_DIR": str(instance),
        "FARM_DATABASE_URL": pg_url,
        "FARM_BROKER_URL": redis_url,
        "FARM_RESULT_BACKEND": f"db+{pg_url}",
        "FARM_STORAGE_URL": f"s3://farm-test-{RUN_ID}/renders",
        "FARM_S3_ENDPOINT_URL": s3_endpoint,
        "FARM_QUEUE": f"farm-test-{RUN_ID}",
        "FARM_HEARTBEAT_SECONDS": "1",
        "FARM_SECRET_KEY": secrets.token_hex(32),  # `farm web` on a shared database refuses to start without one
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


@pytest.fixture(scope="session")
def prod_settings(prod_env: dict[str, str]) -> Settings:
    return load_settings(prod_env, dotenv_path=None)


@pytest.fixture(scope="session")
def shared_database(prod_settings: Settings) -> Iterator[Database]:
    """The run's database with real commits: what the web app, workers and other processes read and write."""
    db = Database(prod_settings.database_url)
    init_db(db.engine)
    yield db
    db.engine.dispose()


class RolledBackDatabase(Database):
    """A `Database` whose sessions all run on one connection inside a transaction that the test rolls back: each
    `session()` commits a savepoint (as Warehouse's tests do), so a test sees its own writes and leaves nothing.
    Postgres' now() is then the test's start throughout; `engine` is the real one, outside the transaction."""

    def __init__(self, connection: Connection) -> None:
        self.engine = connection.engine
        self.sessions = sessionmaker(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)


def needs_commits(item: pytest.Item) -> bool:
    """Rows another connection must see, or real transactions: end-to-end tests (other processes) and tests marked
    `commits` (they race commits across threads, or count transactions)."""
    return item.path.is_relative_to(E2E) or item.get_closest_marker("commits") is not None


@contextlib.contextmanager
def app_sessions_on(connection: Connection) -> Iterator[None]:
    """The in-process web app's sessions (Flask-SQLAlchemy's `db.session`, one per app context) on the test's
    connection, savepoints too, so the app sees the test's rows and its commits roll back with them."""
    from webapp.extensions import db

    app_sessions = db.session
    db.session = scoped_session(
        sessionmaker(bind=connection, join_transaction_mode="create_savepoint"),
        scopefunc=lambda: id(app_ctx._get_current_object()),
    )
    try:
        yield  # Flask-SQLAlchemy removes each app context's session as the context ends
    finally:
        db.session = app_sessions


@pytest.fixture()
def database(request: pytest.FixtureRequest, shared_database: Database) -> Iterator[Database]:
    """Per test, a rolled-back transaction on the run's database (the in-process app's sessions joined to it),
    unless the test needs real commits (see `needs_commits`): then the shared database itself."""
    if needs_commits(request.node):
        yield shared_database
        return
    with shared_database.engine.connect() as connection:
        transaction = connection.begin()
        try:
            with app_sessions_on(connection) if "app" in request.fixturenames else contextlib.nullcontext():
                yield RolledBackDatabase(connection)
        finally:
            transaction.rollback()


@pytest.fixture(scope="session")
def app(prod_settings: Settings, shared_database: Database):  # type: ignore[no-untyped-def]
    from webapp import create_app
    from webapp.extensions import db

    # Its own queue: jobs submitted in-process are checked, not rendered by the e2e worker.
    settings = dataclasses.replace(
        prod_settings, queue=prod_settings.queue + "-inproc", max_zip_bytes=2**20, max_upload_bytes=8 * 2**20
    )
    app = create_app(settings, {"TESTING": True})
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture(scope="session")
def admin_token(prod_settings: Settings, shared_database: Database) -> str:
    """An admin's API token on the test shared_database, for the in-process app's `client`."""
    return make_user(prod_settings, "admin")[1]


@pytest.fixture()
def client(app, admin_token):  # type: ignore[no-untyped-def]
    """The in-process app's test client, signed in as an admin with a Bearer token."""
    return signed_in(app.test_client(), admin_token)


def _make_scene(settings: Settings, path: Path, frames: int, width: int, height: int, samples: int) -> Path:
    run_script(
        settings,
        SCRIPTS / "demo_scene.py",
        [str(path), str(frames), str(width), str(height), str(samples)],
        timeout=300,
    )
    return path


@pytest.fixture(scope="session")
def tiny_blend(prod_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-frame 64×36 Cycles scene at 4 samples, made by the project's own demo-scene code."""
    return _make_scene(prod_settings, tmp_path_factory.mktemp("scenes") / "tiny.blend", 6, 64, 36, 4)


@pytest.fixture(scope="session")
def blend_bytes(tiny_blend: Path) -> bytes:
    return tiny_blend.read_bytes()


@pytest.fixture(scope="session")
def slow_blend(prod_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Frames slow enough (~1 s) to cancel or kill a chunk while Blender is busy."""
    return _make_scene(prod_settings, tmp_path_factory.mktemp("scenes") / "slow.blend", 40, 320, 180, 16)


@pytest.fixture(scope="session")
def farm(
    prod_env: dict[str, str], shared_database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FarmProcesses]:
    """`farm web` and one `farm worker` as real processes in production mode, shared by the e2e tests."""
    procs = FarmProcesses(prod_env, tmp_path_factory.mktemp("logs"))
    procs.start_web()
    procs.start_worker("w1")
    yield procs
    procs.stop_all()


@pytest.fixture(autouse=True)
def farm_left_idle(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test on the shared farm leaves its worker free: jobs it submitted and left queued or rendering (it failed,
    or only needed them running) are canceled at its end, and their ends waited for. Without this the next test's
    job can wait minutes behind 40 slow frames. Jobs made before the test (a module's fixtures) are left alone."""
    if "farm" not in request.fixturenames:
        yield
        return
    farm: FarmProcesses = request.getfixturevalue("farm")
    started = datetime.now(UTC).isoformat()
    yield
    active = "QUEUED,RENDERING,PACKAGING,UPLOADING,CANCELING"
    jobs = HTTP.get(f"{farm.url}/api/jobs", params={"status": active, "limit": 100}, timeout=30).json()["jobs"]
    left = [job for job in jobs if job["created_at"] >= started[:19]]  # ISO 8601 UTC strings sort as times
    for job in left:
        if job["status"] in {"QUEUED", "RENDERING"}:
            HTTP.post(f"{farm.url}/api/jobs/{job['id']}/cancel", timeout=30)
    for job in left:
        wait_for_status(farm.url, job["id"], {"COMPLETED", "FAILED", "CANCELED"}, timeout=120)


@pytest.fixture()
def own_farm(prod_env, shared_database, tmp_path):  # type: ignore[no-untyped-def]
    """`farm web` on a queue of this test's own: the test starts the workers it needs, with the settings it needs."""
    procs = FarmProcesses(dict(prod_env, FARM_QUEUE=f"{prod_env['FARM_QUEUE']}-{uuid.uuid4().hex[:8]}"), tmp_path)
    procs.start_web()
    yield procs
    procs.stop_all()


@pytest.fixture(scope="session")
def farm_cli(farm: FarmProcesses):  # type: ignore[no-untyped-def]
    """Run the `farm` command against the live farm; returns (exit code, stdout, stderr)."""

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "farm", *args], env=farm.env, capture_output=True, text=True, timeout=timeout
        )

    return run
