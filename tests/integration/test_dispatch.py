"""Dispatch on the real Redis: a chord's header is published in pipelined batches, and every message arrives once,
at its job's priority, with the task id its chunk recorded."""

from __future__ import annotations

import dataclasses
import json
import uuid

import redis

from farm.celery_app import make_celery
from farm.config import Settings
from farm.messaging import broker
from farm.messaging.dispatch import RENDER_CHUNK, broker_priority, send_chord
from tests.conftest import RUN_ID


def test_a_big_chord_is_sent_whole_in_batches(prod_settings: Settings):
    settings = dataclasses.replace(prod_settings, queue=f"farm-test-{RUN_ID}-dispatch")
    celery = make_celery(settings)
    task_ids = {chunk: str(uuid.uuid4()) for chunk in range(2500)}  # more than one batch of a thousand commands
    client = redis.Redis.from_url(settings.broker_url)
    try:
        send_chord(celery, "job-x", task_ids, priority=7, queue=settings.queue)
        waiting = broker.queue_lengths(settings, [settings.queue])[settings.queue]["waiting"]
        lists = [f"{settings.queue}:{step}" for step in range(10)] + [settings.queue]
        sent = [json.loads(raw) for key in lists for raw in client.lrange(key, 0, -1)]
        renders = [m for m in sent if m["headers"]["task"] == RENDER_CHUNK]
        assert waiting == len(sent) and len(renders) == 2500
        assert sorted(m["headers"]["id"] for m in renders) == sorted(task_ids.values())
        assert {m["properties"]["priority"] for m in renders} == {broker_priority(7, settings.queue)}
        celery.send_task(RENDER_CHUNK, args=("job-x", 0), queue=settings.queue)  # the batch is over: sent at once
        assert broker.queue_lengths(settings, [settings.queue])[settings.queue]["waiting"] == waiting + 1
    finally:
        client.delete(*[f"{settings.queue}:{step}" for step in range(10)], settings.queue)
        client.close()
