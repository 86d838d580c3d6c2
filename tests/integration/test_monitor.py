"""The monitor's data on real parts: queue lengths counted in the real Redis (and the filesystem broker's folder),
and task history that a real Celery worker records from its signals into Postgres, read back through the API."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

from farm.celery_app import make_celery
from farm.config import Settings, load_settings
from farm.messaging import broker
from tests.conftest import RUN_ID
from tests.helpers import signed_in, wait_until
from webapp import create_app
from webapp.extensions import db
from workers.context import get_context


def test_queue_lengths_count_waiting_messages_at_every_priority_in_redis(prod_settings: Settings):
    settings = dataclasses.replace(prod_settings, queue=f"farm-test-{RUN_ID}-lengths")
    celery = make_celery(settings)
    for priority in (0, 0, 3, 9):
        celery.send_task("farm.render_chunk", args=("x", 1), queue=settings.queue, priority=priority)
    lengths = broker.queue_lengths(settings, [settings.queue, "nobody-sends-here"])
    assert lengths == {settings.queue: {"waiting": 4, "unacked": 0}, "nobody-sends-here": {"waiting": 0, "unacked": 0}}
    with celery.connection_for_write() as conn:
        celery.amqp.queues[settings.queue].bind(conn.default_channel).purge()
    assert broker.queue_lengths(settings, [settings.queue])[settings.queue]["waiting"] == 0


def test_queue_lengths_read_the_filesystem_brokers_folder(tmp_path: Path):
    settings = load_settings({"FARM_INSTANCE_DIR": str(tmp_path)}, dotenv_path=None)
    celery = make_celery(settings)
    for _ in range(3):
        celery.send_task("farm.render_chunk", args=("x", 1), queue="farm")
    celery.send_task("farm.render_chunk", args=("x", 1), queue="other")
    assert broker.queue_lengths(settings, ["farm", "other"]) == {
        "farm": {"waiting": 3, "unacked": 0},
        "other": {"waiting": 1, "unacked": 0},
    }


@pytest.fixture()
def history_worker(prod_settings: Settings, database):  # type: ignore[no-untyped-def]
    """A real Celery worker on the real Redis whose only farm code is the task-history recorder."""
    queue = f"farm-test-{RUN_ID}-history"
    app = Celery("history", broker=prod_settings.broker_url, include=["workers.task_history"])
    app.conf.update(task_default_queue=queue, task_acks_late=True, worker_hijack_root_logger=False)
    app.conf.farm_settings = prod_settings

    @app.task(name="test.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="test.boom")
    def boom() -> None:
        raise ValueError("scene has no camera")

    @app.task(name="test.flaky", bind=True, max_retries=2, default_retry_delay=0)
    def flaky(self) -> str:  # type: ignore[no-untyped-def]
        if self.request.retries == 0:
            raise self.retry(exc=ConnectionError("storage blinked"))
        return "ok"

    with start_worker(app, pool="solo", perform_ping_check=False, hostname=f"history-{RUN_ID}@test", queues=[queue]):
        yield app
    get_context().db.engine.dispose()  # the recorder's connections, opened in the worker's thread


def test_worker_records_task_history_that_the_api_serves(history_worker: Celery, client, app, admin_token):
    ok = history_worker.send_task("test.add", args=(2, 3))
    bad = history_worker.send_task("test.boom")
    flaky = history_worker.send_task("test.flaky")

    def states() -> dict[str, dict]:
        tasks = client.get("/api/tasks?limit=500").get_json()["tasks"]
        return {t["id"]: t for t in tasks if t["id"] in wanted}

    wanted = {ok.id: "SUCCESS", bad.id: "FAILURE", flaky.id: "SUCCESS"}
    seen = wait_until(
        lambda: (s := states()) and all(s.get(i, {}).get("state") == w for i, w in wanted.items()) and s,
        timeout=60,
        what="the three tasks to be recorded as finished",
    )
    assert seen[ok.id]["name"] == "test.add" and seen[ok.id]["result"] == "5" and seen[ok.id]["args"] == "(2, 3)"
    assert "scene has no camera" in seen[bad.id]["result"]
    assert seen[flaky.id]["retries"] == 1  # the retry re-sent the same id; its second run is what is kept
    for task in seen.values():
        assert task["worker"] and task["runtime"] >= 0
        assert task["received_at"] and task["started_at"] and task["finished_at"]

    failures = client.get("/api/tasks?state=FAILURE&limit=500").get_json()["tasks"]
    assert bad.id in [t["id"] for t in failures] and {t["state"] for t in failures} == {"FAILURE"}
    by_worker = client.get(f"/api/tasks?worker={seen[ok.id]['worker']}&limit=500").get_json()["tasks"]
    assert {ok.id, bad.id, flaky.id} <= {t["id"] for t in by_worker}
    restarted = create_app(app.extensions["farm"], {"TESTING": True})  # a web app started afresh still has it
    kept = signed_in(restarted.test_client(), admin_token).get("/api/tasks?limit=500").get_json()["tasks"]
    assert {ok.id, bad.id, flaky.id} <= {t["id"] for t in kept}
    with restarted.app_context():
        db.engine.dispose()

    response = client.get("/api/tasks?state=EXPLODED")
    assert response.status_code == 400 and response.get_json()["error"]["field"] == "state"


@pytest.fixture(params=["postgres", "sqlite"])
def history_db(request, tmp_path):  # type: ignore[no-untyped-def]
    """Production's database, and the embedded default's."""
    if request.param == "postgres":
        yield request.getfixturevalue("database")
        return
    from farm.db import Database, init_db

    embedded = Database(f"sqlite:///{tmp_path}/history.db")
    init_db(embedded.engine)
    yield embedded
    embedded.engine.dispose()


def test_task_history_keeps_the_latest_news_whatever_order_it_arrives_in(history_db):
    """Signals of one task come from two processes (RECEIVED from the consumer, the rest from the pool child), so
    news can arrive late: a row only moves forward, and a retry's new attempt starts over with its ending cleared."""
    from farm.models import TaskRecord
    from workers.task_history import record

    database = history_db

    task_id = f"history-{RUN_ID}"
    ended = {"finished_at": None, "runtime_ms": 12.5, "result": "DONE"}

    def stored() -> tuple[str, int, float | None]:
        with database.session() as session:
            row = session.get(TaskRecord, task_id)
            assert row is not None
            return row.state, row.retries, row.runtime_ms

    news = [
        ("STARTED", 0, {"name": "farm.render_chunk", "worker": "w"}, ("STARTED", 0, None)),
        ("RECEIVED", 0, {"name": "farm.render_chunk", "queue": "farm"}, ("STARTED", 0, None)),  # late: dropped
        ("SUCCESS", 0, {"name": "farm.render_chunk", **ended}, ("SUCCESS", 0, 12.5)),
        ("STARTED", 0, {"name": "farm.render_chunk"}, ("SUCCESS", 0, 12.5)),  # late: dropped
        ("RECEIVED", 1, {"name": "farm.render_chunk", "runtime_ms": None, "result": None}, ("RECEIVED", 1, None)),
    ]
    for state, retries, values, expected in news:
        with database.session() as session:
            record(session, {task_id: (state, retries, values)})
        assert stored() == expected, (state, retries)
    with database.session() as session:
        row = session.get(TaskRecord, task_id)
        assert row is not None and row.worker == "w" and row.queue is None  # the dropped news left no trace
        many = {f"{task_id}-{n}": ("SUCCESS", 0, {"name": "farm.package_job", "result": str(n)}) for n in range(3)}
        record(session, many)  # a flush's news, one statement
    with database.session() as session:
        assert [session.get(TaskRecord, t).result for t in many] == ["0", "1", "2"]  # type: ignore[union-attr]
