"""A worker process's life as the database sees it: register with the devices Cycles found
(farm/blender/devices.py) and the machine's memory, heartbeat, go OFFLINE on exit.

Each heartbeat is stamped with the database's clock, and carries how far this machine's clock is off from it (for
the monitor: nothing is judged by it). It also keeps the disk's free-space floor (FARM_MIN_FREE_GB: evicting the
frame cache, then idle sources) and says whether the worker is healthy: a disk under its floor is shown.

Runs in the worker's main process (Celery signals), not in the pool children that render; the janitor runs here
too, so the embedded default (where nothing else runs) recovers lost work as well. The database is the
truth for DISABLED: each heartbeat reads the status back and starts or stops consuming to match, so a disable
survives a lost broadcast or a restart. With FARM_METRICS_PORT, the main process also serves the worker's
Prometheus metrics.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import prometheus_client
from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from farm import clock, metrics
from farm.blender import devices
from farm.jobs import states
from farm.messaging.dispatch import set_worker_consuming
from farm.messaging.janitor import Janitor
from farm.models import WorkerStatus
from workers.context import WorkerContext, get_context, in_main_process
from workers.disk import DISK_FULL, make_room

log = logging.getLogger(__name__)
_stop = threading.Event()


def _heartbeat_loop(app: Celery, hostname: str, queues: list[str], consuming: bool) -> None:
    ctx = get_context()
    while not _stop.wait(ctx.settings.heartbeat_seconds):
        try:
            health = disk_health(ctx)
            with ctx.db.session() as session:
                status = states.heartbeat(session, hostname, clock.offset(session))
                states.worker_health(session, hostname, health)
            wanted = status != WorkerStatus.DISABLED
            if wanted != consuming:
                set_worker_consuming(app, hostname, queues, wanted)
                consuming = wanted
                log.info("worker %s %s consuming", hostname, "resumed" if wanted else "stopped")
        except Exception:  # a database or broker outage must not kill the heartbeat; the next beat retries
            log.exception("heartbeat failed")


def disk_health(ctx: WorkerContext) -> str | None:
    """Keep the floor; what is wrong if even evicting leaves the disk under it (or the disk cannot be read: the
    heartbeat itself must go on)."""
    floor = ctx.settings.min_free_bytes
    try:
        free = make_room(ctx.settings.cache_dir, ctx.frames, floor)
    except OSError as exc:
        return f"cannot check the disk under {ctx.settings.cache_dir}: {exc}"
    if free >= floor:
        return None
    return f"{DISK_FULL}: {free >> 20} MiB free under {ctx.settings.cache_dir}, below FARM_MIN_FREE_GB"


def memory_total() -> int | None:
    """The machine's memory (MemTotal), which a retry after an out-of-memory kill looks for more of."""
    try:
        with open("/proc/meminfo") as fh:
            return next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("MemTotal:"))
    except (OSError, StopIteration, ValueError):
        return None


def serve_metrics(port: int) -> None:
    """This worker's /metrics for Prometheus, summed over its pool processes through the multiprocess folder that
    `farm worker` set; a port already taken is said in the log, and the worker renders on without it."""
    try:
        prometheus_client.start_http_server(port, registry=metrics.registry())
    except OSError as exc:
        log.error("cannot serve metrics on port %d (FARM_METRICS_PORT): %s", port, exc)
        return
    log.info("metrics on http://0.0.0.0:%d/metrics", port)


@worker_ready.connect
def register(sender: Any, **_: Any) -> None:
    hostname = sender.hostname
    in_main_process()
    ctx = get_context()
    ctx.storage.ensure_ready()
    queues = sorted(q.name for q in sender.app.amqp.queues.consume_from.values())
    with ctx.db.session() as session:
        states.register_worker(
            session,
            hostname,
            devices=devices.describe(ctx.devices),
            queues=queues,
            pid=os.getpid(),
            memory_bytes=memory_total(),
        )
        status = states.heartbeat(session, hostname, clock.offset(session))
    consuming = True
    if status == WorkerStatus.DISABLED:
        set_worker_consuming(sender.app, hostname, queues, False)
        consuming = False
    threading.Thread(
        target=_heartbeat_loop, args=(sender.app, hostname, queues, consuming), name="farm-heartbeat", daemon=True
    ).start()
    if ctx.settings.metrics_port:
        serve_metrics(ctx.settings.metrics_port)
    janitor = Janitor(ctx.db, sender.app, ctx.settings, name=f"janitor@{hostname}")
    threading.Thread(target=janitor.run, args=(_stop,), name="farm-janitor", daemon=True).start()
    log.info("worker %s registered (%s)", hostname, status)


@worker_shutdown.connect
def unregister(sender: Any, **_: Any) -> None:
    _stop.set()
    with get_context().db.session() as session:
        states.worker_offline(session, sender.hostname, "worker shut down")
