"""What every task needs (settings, database, storage, the devices it may render on), made once per worker
process, after the fork."""

from __future__ import annotations

import os
from dataclasses import dataclass

from celery import current_app

from farm import devices
from farm.config import Settings
from farm.db import Database
from farm.storage import Storage, open_storage


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    db: Database
    storage: Storage
    devices: list[devices.Device]


_contexts: dict[int, WorkerContext] = {}


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
        _contexts[pid] = WorkerContext(
            settings=settings, db=Database(settings.database_url), storage=open_storage(settings), devices=found
        )
    return _contexts[pid]
