"""Task history for the monitor, recorded by the workers themselves from Celery's signals into our database.

Flower builds its history from the event stream and keeps it in memory, so it is lost when Flower restarts and
missing while Flower is down. Here each worker writes what happened to its tasks (received, started, and how it
ended, with runtime); the web app only reads. A thread of each worker process writes the news of the last half
second in one statement, one row per task, so the history costs a render task no round trip of its own.
Recording is best effort: a database hiccup (or a kill -9) costs history rows, never a task. Workers still send
Celery's own task events, so the real Flower can watch too.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from celery.signals import task_postrun, task_prerun, task_received, task_revoked, worker_process_shutdown
from sqlalchemy import case, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from farm.db import Database
from farm.messaging.dispatch import RENDER_CHUNK
from farm.models import TaskRecord, utcnow
from workers.context import get_context

log = logging.getLogger(__name__)
KEEP = 20_000  # rows of history kept; older ones are pruned
PRUNE_EVERY = 200  # receipts per process between prunes
STEP = {"RECEIVED": 0, "STARTED": 1}  # anything else is an ending (SUCCESS, FAILURE, RETRY, REJECTED, REVOKED…)
ENDING = ("finished_at", "runtime_ms", "result")  # cleared when a retry's new attempt is received
FLUSH_SECONDS = 0.5
_started: dict[str, float] = {}
_received = itertools.count(1)


def _short(value: Any, limit: int = 500) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _subject(name: str, args: Any, kwargs: Any) -> dict[str, Any]:
    """The job (and chunk) a farm task works on, so the monitor can link to it."""
    if not name.startswith("farm."):
        return {"job_id": None, "chunk_id": None}
    args = list(args or ())
    kwargs = dict(kwargs or {})
    job_id = kwargs.get("job_id") or (args[0] if args and isinstance(args[0], str) and len(args[0]) == 36 else None)
    chunk_id = args[1] if name == RENDER_CHUNK and len(args) > 1 and isinstance(args[1], int) else None
    return {"job_id": job_id, "chunk_id": chunk_id}


def record(session: Session, news: Mapping[str, tuple[str, int, dict[str, Any]]]) -> None:
    """Insert or advance each task's row (task id → state, retries, values), all in one statement: news older than
    what is stored (signals race across processes) is dropped, a value the news does not carry keeps what is stored,
    and an ending's columns are replaced together (a retry's new attempt clears them)."""
    now = utcnow()
    rows = [
        {**_NOTHING, **values, "task_id": task_id, "state": state, "retries": retries, "updated_at": now}
        for task_id, (state, retries, values) in news.items()
    ]
    if rows:
        session.execute(_upsert(session.get_bind().dialect.name), rows)


_TABLE = TaskRecord.__table__
_NOTHING = dict.fromkeys(_TABLE.columns.keys())


def _step(columns: Any) -> Any:
    """The order of what we hear about one task id, of the stored row or of the news (`excluded`): a retry re-sends
    the same id, so its attempt comes first."""
    return columns.retries * 10 + case(*((columns.state == name, order) for name, order in STEP.items()), else_=2)


@functools.cache
def _upsert(dialect_name: str) -> Any:
    insert = (postgresql if dialect_name == "postgresql" else sqlite).insert(_TABLE)
    new = insert.excluded
    kept = {
        name: new[name] if name in ENDING else func.coalesce(new[name], _TABLE.c[name])
        for name in _NOTHING
        if name != "task_id"
    }
    return insert.on_conflict_do_update(
        index_elements=[_TABLE.c.task_id], set_=kept, where=_step(_TABLE.c) <= _step(new)
    )


def prune(session: Session, keep: int = KEEP) -> None:
    cutoff = session.scalar(select(TaskRecord.updated_at).order_by(TaskRecord.updated_at.desc()).offset(keep).limit(1))
    if cutoff is not None:
        session.execute(TaskRecord.__table__.delete().where(TaskRecord.updated_at <= cutoff))


class Writer:
    """This process's news, folded per task id in the order heard, written by a thread every FLUSH_SECONDS."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.news: dict[str, tuple[str, int, dict[str, Any]]] = {}
        self.thread: threading.Thread | None = None
        self.db: Database | None = None

    def add(self, task_id: str, state: str, retries: int, values: dict[str, Any]) -> None:
        with self.lock:
            if task_id in self.news:  # later news wins; a value it does not know keeps what came before
                _, _, before = self.news[task_id]
                values = before | {k: v for k, v in values.items() if v is not None or k in ENDING}
            self.news[task_id] = (state, retries, values)
            if self.thread is None:
                self.db = get_context().db  # here: Celery's current app may not be set in the writer's thread
                self.thread = threading.Thread(target=self.run, name="task-history", daemon=True)
                self.thread.start()

    def run(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            self.flush()

    def flush(self) -> None:
        with self.lock:
            news, self.news = self.news, {}
        if not news or self.db is None:
            return
        try:
            with self.db.session() as session:
                record(session, news)
        except Exception as exc:  # history is a convenience; the tasks themselves must not notice
            log.warning("could not record %d tasks' history: %s", len(news), exc)


_writer = Writer()
os.register_at_fork(after_in_child=lambda: globals().update(_writer=Writer()))  # the parent's thread stays there
atexit.register(lambda: _writer.flush())


@worker_process_shutdown.connect
def on_process_shutdown(**_: Any) -> None:
    _writer.flush()


def _write(task_id: str, state: str, retries: int, **values: Any) -> None:
    _writer.add(task_id, state, retries, values)


@task_received.connect
def on_received(request: Any, **_: Any) -> None:
    delivery = request.delivery_info or {}
    _write(
        request.id,
        "RECEIVED",
        int(request.request_dict.get("retries") or 0),
        name=request.name,
        worker=request.hostname,
        queue=_short(delivery.get("routing_key"), 200),
        args=_short(request.argsrepr or request.args),
        received_at=utcnow(),
        **dict.fromkeys(ENDING),
        **_subject(request.name, request.args, request.kwargs),
    )
    if next(_received) % PRUNE_EVERY == 0:
        try:
            with get_context().db.session() as session:
                prune(session)
        except Exception as exc:
            log.warning("could not prune task history: %s", exc)


@task_prerun.connect
def on_prerun(task_id: str, task: Any, args: Any = None, kwargs: Any = None, **_: Any) -> None:
    _started[task_id] = time.monotonic()
    request = task.request
    _write(
        task_id,
        "STARTED",
        int(request.retries or 0),
        name=task.name,
        worker=request.hostname,
        started_at=utcnow(),
        **_subject(task.name, args, kwargs),
    )


@task_postrun.connect
def on_postrun(task_id: str, task: Any, retval: Any = None, state: str | None = None, **_: Any) -> None:
    began = _started.pop(task_id, None)
    _write(
        task_id,
        state or "UNKNOWN",
        int(task.request.retries or 0),
        name=task.name,
        worker=task.request.hostname,
        finished_at=utcnow(),
        runtime_ms=round((time.monotonic() - began) * 1000, 1) if began is not None else None,
        result=_short(retval) or "",
    )


@task_revoked.connect
def on_revoked(request: Any, terminated: bool = False, expired: bool = False, **_: Any) -> None:
    why = "expired" if expired else "terminated" if terminated else "revoked before it ran"
    _write(
        request.id,
        "REVOKED",
        int(getattr(request, "request_dict", {}).get("retries") or 0),
        name=request.name,
        worker=getattr(request, "hostname", None),
        finished_at=utcnow(),
        result=why,
    )
