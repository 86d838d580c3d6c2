"""The farm's own Prometheus metrics: what each process counts as it works (frames and their render seconds,
chunk failures and retries, packaging seconds, janitor actions, webhook attempts). What the database knows (jobs
by status, workers by status and device, frames ever rendered) and what the broker holds (queue lengths) are read
at scrape time by `farm web`'s /metrics instead (`webapp/metrics.py`).

`farm web` (gunicorn, several processes) and `farm worker` (Celery's prefork pool) run many processes, so both
give prometheus-client a multiprocess folder of their own before anything imports it (`farm.cli.metrics_folder`):
each process writes its values there and a scrape sums them. `farm web` serves them on /metrics, next to the
database's figures; each `farm worker` serves its own on FARM_METRICS_PORT (Prometheus scrapes every worker, as it
scrapes every node exporter). Without a folder (tests, `python -c`), values stay in the process.

Only this module imports prometheus_client: it picks its multiprocess mode once, at import, from the environment.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from farm.cli.metrics_folder import ENV

FRAME_SECONDS = Histogram(
    "farm_frame_render_seconds",
    "Seconds Blender took to render one frame, by worker and device.",
    ["worker", "device"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
CHUNK_FAILURES = Counter("farm_chunk_failures", "Chunks that ended FAILED on this worker.", ["worker"])
CHUNK_RETRIES = Counter(
    "farm_chunk_retries", "Chunks put back in the queue for another attempt, by why.", ["reason"]
)  # reason: failed (the renderer reported a failure), silent (the janitor found its renderer gone)
PACKAGING_SECONDS = Histogram(
    "farm_packaging_seconds",
    "Seconds one packaging attempt took (zip and upload), by outcome.",
    ["outcome"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400),
)
JANITOR_ACTIONS = Counter("farm_janitor_actions", "What the janitor put right, by action.", ["action"])
WEBHOOK_ATTEMPTS = Counter(
    "farm_webhook_attempts", "Webhook POSTs made, by outcome (delivered, failed, given_up).", ["outcome"]
)


def registry() -> CollectorRegistry:
    """What a scrape reads: every process's values through the multiprocess folder, else this process's."""
    if os.environ.get(ENV):
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return merged
    return REGISTRY


def exposition(extra: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """The text format of `registry()` (and `extra`), with its content type."""
    text = generate_latest(registry())
    if extra is not None:
        text += generate_latest(extra)
    return text, CONTENT_TYPE_LATEST
