"""`GET /metrics`: Prometheus' text format. Every web process's own counters (webhook attempts of the jobs it
canceled, through the multiprocess folder `farm web` set), and, read at scrape time, what the database and the
broker know: jobs by status, workers by status and device, frames ever rendered per renderer, queue lengths.

Those are read here, not counted in a process, so every web process answers the same and nothing is lost when
one restarts; a scrape costs four small queries and one pipelined round trip to Redis. Workers serve their own
counters (frame render seconds, chunk failures and retries, packaging seconds, janitor actions) on
FARM_METRICS_PORT: see `farm.metrics`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator

from flask import Blueprint, Response
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from farm import metrics
from farm.clock import database_now
from farm.config import Settings
from farm.messaging import broker
from farm.models import FrameTally, Job, JobStatus, Worker
from webapp import services
from webapp.api.monitor import monitored_queues
from webapp.api.serializers import worker_status
from webapp.extensions import db

log = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)


class FarmState(Collector):
    """The database's and the broker's figures, read when Prometheus asks."""

    def __init__(self, session: Session, settings: Settings) -> None:
        self.session, self.settings = session, settings

    def collect(self) -> Iterator[Metric]:
        yield self.jobs()
        yield self.workers()
        yield self.frames()
        yield from self.queues()

    def jobs(self) -> Metric:
        counts = dict(self.session.execute(select(Job.status, func.count()).group_by(Job.status)).tuples().all())
        family = GaugeMetricFamily("farm_jobs", "Jobs by status, in the database.", labels=["status"])
        for status in JobStatus:
            family.add_metric([status.value], counts.get(status.value, 0))
        return family

    def workers(self) -> Metric:
        """A worker counts once per device it has (a CPU-only worker under its CPU); its status as the monitor
        shows it (ONLINE with a stale heartbeat is OFFLINE)."""
        now, timeout = database_now(self.session), self.settings.worker_timeout_seconds
        counts: Counter[tuple[str, str]] = Counter()
        for worker in self.session.scalars(select(Worker)):
            status = worker_status(worker, now, timeout)
            for device in worker.devices or ["none"]:
                counts[(status, str(device))] += 1
        family = GaugeMetricFamily("farm_workers", "Workers by status and device.", labels=["status", "device"])
        for (status, device), n in sorted(counts.items()):
            family.add_metric([status, device], n)
        return family

    def frames(self) -> Metric:
        family = CounterMetricFamily(
            "farm_frames_rendered", "Frames rendered and stored, ever, by renderer.", labels=["worker"]
        )
        for worker, frames in self.session.execute(select(FrameTally.worker, FrameTally.frames)).tuples():
            family.add_metric([worker], frames)
        return family

    def queues(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("farm_broker_up", "1 if the broker answered this scrape's queue lengths.")
        try:
            lengths = broker.queue_lengths(self.settings, monitored_queues(self.session))
        except Exception as exc:  # the broker is down: say so, and still serve the rest
            log.warning("metrics: cannot read the broker's queues: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        family = GaugeMetricFamily(
            "farm_queue_messages",
            "Messages in each broker queue: waiting, or taken and unacked.",
            labels=["queue", "state"],
        )
        for queue, counts in lengths.items():
            for state, n in counts.items():
                family.add_metric([queue, state], n)
        yield family


@bp.get("/metrics")
def scrape() -> Response:
    state = CollectorRegistry(auto_describe=False)
    state.register(FarmState(db.session, services.settings()))
    body, content_type = metrics.exposition(state)
    return Response(body, content_type=content_type)
