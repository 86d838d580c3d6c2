"""A worker's share of Postgres' connections, counted by Postgres itself (pg_stat_activity) under an application
name of the test's own: its pool process, which renders, keeps FARM_WORKER_DB_CONNECTIONS (1) between
transactions; its main process (registration, heartbeat, janitor) and Celery's result backend keep none. So one
default Postgres (100 connections) serves about 64 idle workers beside the web app, not 32."""

from __future__ import annotations

import statistics
import time
import uuid

from tests.integration.test_db_connections import open_connections


def test_an_idle_worker_keeps_one_database_connection(own_farm):
    name = f"farm-worker-{uuid.uuid4().hex[:8]}"
    url = own_farm.env["FARM_DATABASE_URL"]
    url += ("&" if "?" in url else "?") + f"application_name={name}"
    own_farm.start_worker("conns", {"FARM_DATABASE_URL": url, "FARM_HEARTBEAT_SECONDS": "1"})
    samples = []
    for _ in range(20):  # over five heartbeats of the main process, each a transaction on a connection of its own
        samples.append(open_connections(name))
        time.sleep(0.25)
    assert min(samples) == 1, samples  # the pool process's, kept
    assert statistics.median(samples) == 1, samples  # the main process's come and go with its transactions
