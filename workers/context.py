"""What every task needs (settings, database, storage, the devices it may render on), made once per worker
process, after the fork."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from celery import current_app
from celery.signals import worker_process_init
from sqlalchemy import text

from farm.blender import devices
from farm.config import Settings
from farm.db import Database
from farm.storage import Storage, open_storage
from farm.webhooks import courier
from workers.frame_cache import FrameCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    db: Database
    storage: Storage
    devices: list[devices.Device]
    frames: FrameCache  # frames this machine rendered, for its packager


_contexts: dict[int, WorkerContext] = {}
_main_pid: int | None = None


def in_main_process() -> None:
    """Say that this is `farm worker`'s main process (Celery's parent: registration, heartbeat, janitor). It makes a
    transaction every few seconds, so its context keeps no connection between them: a worker then holds only its
    pool process's (FARM_WORKER_DB_CONNECTIONS), and one Postgres serves twice the workers."""
    global _main_pid
    _main_pid = os.getpid()


def get_context() -> WorkerContext:
    """This process's context; keyed by pid so a forked pool child never reuses its parent's connections."""
    pid = os.getpid()
    if pid not in _contexts:
        settings: Settings = current_app.conf.farm_settings
        for inherited in _contexts.values():
            inherited.db.engine.dispose(close=False)  # leave the parent's connections alone
        # `farm worker` detects once and hands each process its (pinned) devices; a bare `celery worker` asks here.
        found = next(iter(_contexts.values())).devices if _contexts else devices.from_env() or devices.detect(settings)
        _contexts.clear()
        courier.install(settings)  # this process sends the webhooks of the jobs it ends
        _contexts[pid] = WorkerContext(
            settings=settings,
            # No pre-ping round trip per session: worker code retries a dropped connection (with_retries), and
            # its loops (heartbeat, janitor, history) try again on their next turn. Few connections kept: a farm
            # has many workers on one Postgres; the pool process that renders keeps them, the main process none.
            db=Database(
                settings.database_url, pre_ping=False, keep=0 if pid == _main_pid else settings.worker_db_connections
            ),
            storage=open_storage(settings),
            devices=found,
            frames=FrameCache(settings.cache_dir / "frames", settings.frame_cache_max_bytes),
        )
    return _contexts[pid]


@worker_process_init.connect
def context_at_start(**_: Any) -> None:
    """A pool process makes its context (database engine, S3 client: about 0.2 s) and its first database connection
    when it starts, not in its first chunk. A convenience: what fails here is made again, or fails, in that chunk."""
    if getattr(current_app.conf, "farm_settings", None) is None:
        return
    try:
        with get_context().db.session() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:
        log.warning("could not prepare this worker process: %s", exc)
