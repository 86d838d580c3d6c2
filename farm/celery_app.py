"""The farm's Celery app, built from the same settings as everything else.

Tasks live in `workers.tasks` and are named `farm.*`; the web app sends them by name, so it never imports worker
code. Render tasks ack late, one at a time per slot: a worker that dies gives its chunk back to the queue.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from farm.config import Settings, load_settings
from farm.db import pool_options


def broker_options(settings: Settings) -> dict[str, Any]:
    if settings.embedded_broker:
        folder = settings.broker_folder
        for sub in ("queue", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.2,
        }
    if settings.broker_url.startswith("redis"):
        # Priority queues: 0-9 as separate Redis lists. An unacked message is re-delivered after the visibility
        # timeout even if its task still runs; the database's claim on the chunk keeps that from rendering twice.
        options: dict[str, Any] = {
            "priority_steps": list(range(10)),
            "sep": ":",
            "queue_order_strategy": "priority",
            "visibility_timeout": settings.visibility_seconds,
        }
        if settings.visibility_seconds < 600:  # a short timeout is only useful if restores are checked often
            options.update(unacked_restore_interval=1, unacked_restore_throttle=1)
        return options
    return {}


def make_celery(settings: Settings) -> Celery:
    from farm.messaging.dispatch import PACKAGE_JOB  # here, not above: farm.messaging.dispatch imports this module

    if settings.result_backend.startswith("db+sqlite:///"):
        settings.instance_dir.mkdir(parents=True, exist_ok=True)
    app = Celery(
        "farm",
        broker=settings.broker_url,
        backend=settings.result_backend,
        include=["workers.tasks", "workers.lifecycle", "workers.task_history"],
    )
    app.conf.update(
        broker_transport_options=broker_options(settings),
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_direct=True,  # each worker also consumes its own queue, for retries placed on a chosen worker
        # No STARTED result per task (a write to the result backend that nothing reads): the database knows which
        # chunk renders where, the monitor's history has each task's start, and workers still send task-started.
        task_track_started=False,
        task_send_sent_event=True,
        worker_send_task_events=True,
        result_extended=True,
        result_expires=7 * 24 * 3600,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # The result backend writes once per task (and chord_unlock reads every CHORD_CHECK_SECONDS): it keeps no
        # connection, so a worker's pool process holds only its own engine's (FARM_WORKER_DB_CONNECTIONS).
        database_engine_options={"pool_pre_ping": True, **pool_options(0)},
        worker_hijack_root_logger=False,
        broker_connection_max_retries=None,
        # Packaging streams a whole job through one task: its soft limit raises SoftTimeLimitExceeded inside it, so
        # the run aborts its upload and records why; the hard limit kills a pool process stuck where no exception
        # reaches. Either way the janitor resumes the job, until FARM_PACKAGING_ATTEMPTS runs are spent.
        task_annotations={
            PACKAGE_JOB: {
                "soft_time_limit": settings.packaging_soft_seconds,
                "time_limit": settings.packaging_hard_seconds,
            }
        },
    )
    app.conf.farm_settings = settings
    return app


def __getattr__(name: str) -> Celery:
    """`app`: the farm's Celery app from the environment, made on first use, for Celery's own tools —
    `celery -A farm.celery_app:app flower`, `celery -A farm.celery_app:app inspect active`."""
    if name != "app":
        raise AttributeError(name)
    globals()["app"] = app = make_celery(load_settings())
    return app
