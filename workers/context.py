"""What every task needs (settings, database, storage), made once per worker process, after the fork."""

from __future__ import annotations

import os
from dataclasses import dataclass

from celery import current_app

from farm.config import Settings
from farm.db import Database
from farm.storage import Storage, open_storage


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    db: Database
    storage: Storage


_contexts: dict[int, WorkerContext] = {}


def get_context() -> WorkerContext:
    """This process's context; keyed by pid so a forked pool child never reuses its parent's connections."""
    pid = os.getpid()
    if pid not in _contexts:
        settings: Settings = current_app.conf.farm_settings
        for inherited in _contexts.values():
            inherited.db.engine.dispose(close=False)  # leave the parent's connections alone
        _contexts.clear()
        _contexts[pid] = WorkerContext(
            settings=settings, db=Database(settings.database_url), storage=open_storage(settings)
        )
    return _contexts[pid]
