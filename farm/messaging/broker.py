"""Read what the broker holds, without consuming it: the ids of tasks still waiting or delivered-but-unacked.

The janitor uses this to tell a chunk whose task is merely waiting from one whose task the broker lost (Redis
restarted empty, a worker of the filesystem broker died holding it). Supports the brokers the farm configures:
Redis (priority sub-queues and the `unacked` hash) and the filesystem broker (one file per message).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from celery.utils import worker_direct

from farm.config import Settings

PRIORITY_SEP = ":"  # kombu's Redis `sep` transport option, set in farm.celery_app
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"


def _task_id(raw: bytes | str) -> str | None:
    try:
        message: Any = json.loads(raw)
    except ValueError:
        return None
    if isinstance(message, list):  # unacked entries are [message, exchange, routing_key]
        message = message[0] if message else {}
    headers = message.get("headers") if isinstance(message, dict) else None
    return headers.get("id") if isinstance(headers, dict) else None


def _redis_messages(settings: Settings, queues: Iterable[str], held_within: float | None) -> Iterator[bytes]:
    client = redis.Redis.from_url(settings.broker_url, socket_timeout=10)
    try:
        for queue in queues:
            for key in [queue, *(f"{queue}{PRIORITY_SEP}{p}" for p in range(1, 10))]:
                yield from client.lrange(key, 0, -1)
        if held_within is None:
            yield from client.hvals(UNACKED)
        else:  # kombu records each delivery's time in the `unacked_index` sorted set
            recent = client.zrangebyscore(UNACKED_INDEX, time.time() - held_within, "+inf")
            yield from (raw for raw in (client.hmget(UNACKED, recent) if recent else []) if raw)
    finally:
        client.close()


def _filesystem_messages(settings: Settings, queues: Iterable[str]) -> Iterator[bytes]:
    wanted = {f"{q}.msg" for q in queues}
    folder = settings.broker_folder / "queue"
    for path in folder.glob("*.msg"):
        if path.name.partition(".")[2] in wanted:
            try:
                yield path.read_bytes()
            except FileNotFoundError:  # consumed while we looked
                continue


def pending_task_ids(settings: Settings, queues: Iterable[str], *, held_within: float | None = None) -> set[str]:
    """Ids of tasks the broker still holds for `queues`: waiting, or delivered and not yet acknowledged — with
    `held_within`, only those delivered that recently (a task delivered long ago whose chunk nobody claimed was
    taken by a worker that died before it could: each worker prefetches one task and claims it at once)."""
    messages = (
        _filesystem_messages(settings, queues)
        if settings.embedded_broker
        else _redis_messages(settings, queues, held_within)
    )
    return {tid for tid in map(_task_id, messages) if tid}


def janitor_turn(settings: Settings, janitor: str, seconds: float) -> bool:
    """Whether this janitor sweeps now: on Redis, the first to ask takes the turn for `seconds` (one SET NX), so a
    farm of many workers, each running a janitor, sweeps about as often as one janitor would. The embedded broker
    (one machine), or a Redis that does not answer (a broker outage is what sweeps recover from), says yes."""
    if settings.embedded_broker:
        return True
    client = redis.Redis.from_url(settings.broker_url, socket_timeout=10)
    try:
        return bool(client.set(f"farm-janitor:{settings.queue}", janitor, nx=True, px=max(1, int(seconds * 1000))))
    except redis.RedisError:
        return True
    finally:
        client.close()


def queue_names(queue: str, workers: Iterable[str]) -> list[str]:
    """A shared queue and the given workers' own queues."""
    return [queue, *(worker_direct(w).name for w in workers)]


def _routing_key(raw: bytes) -> str | None:
    try:
        entry: Any = json.loads(raw)
    except ValueError:
        return None
    return entry[2] if isinstance(entry, list) and len(entry) > 2 else None


def queue_lengths(settings: Settings, queues: Iterable[str]) -> dict[str, dict[str, int]]:
    """For the monitor: per queue, messages `waiting` for a worker and (Redis only; the filesystem broker has no
    such state) `unacked` ones a worker holds."""
    names = list(dict.fromkeys(queues))
    if settings.embedded_broker:
        folder = settings.broker_folder / "queue"
        counts = dict.fromkeys(names, 0)
        for path in folder.glob("*.msg"):
            queue = path.name.partition(".")[2].removesuffix(".msg")
            if queue in counts:
                counts[queue] += 1
        return {q: {"waiting": n, "unacked": 0} for q, n in counts.items()}
    client = redis.Redis.from_url(settings.broker_url, socket_timeout=10)
    try:
        with client.pipeline(transaction=False) as pipe:
            for queue in names:
                for key in [queue, *(f"{queue}{PRIORITY_SEP}{p}" for p in range(1, 10))]:
                    pipe.llen(key)
            lengths = pipe.execute()
        unacked = [_routing_key(raw) for raw in client.hvals(UNACKED)]
    finally:
        client.close()
    return {
        q: {"waiting": sum(lengths[i * 10 : i * 10 + 10]), "unacked": unacked.count(q)} for i, q in enumerate(names)
    }
