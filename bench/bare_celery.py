"""The baseline of bench/orchestration.py: the farm's own Celery configuration (same Redis transport options, late
acks, prefetch 1, the same Postgres result backend) with tasks that do nothing, so the difference is the farm's own
work per task (claiming, recording, storing, the state machine) and nothing else.

    celery -A bench.bare_celery worker -Q QUEUE -c 1
"""

from __future__ import annotations

import time

import redis

from farm.celery_app import make_celery
from farm.config import load_settings

settings = load_settings()
app = make_celery(settings)
app.conf.include = []  # not the farm's tasks or its worker lifecycle: bare Celery


@app.task(name="bench.noop")
def noop(index: int) -> int:
    return index


@app.task(name="bench.done")
def done(results: list[int], key: str) -> None:
    """The chord's callback: records when the last no-op finished."""
    client = redis.Redis.from_url(settings.broker_url)
    client.set(key, repr(time.time()), ex=3600)
    client.close()
