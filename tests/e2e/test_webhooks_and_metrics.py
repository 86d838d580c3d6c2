"""A real job on a live `farm web` and `farm worker` (Postgres, Redis, moto S3, Blender): its end reaches a
notify_url receiver and FARM_WEBHOOK_URL's (which fails once and hears the retry the worker's janitor sends), and
Prometheus' scrapes of the web app and of the worker count what happened."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from farm import metrics as farm_metrics
from tests.helpers import HTTP, FarmProcesses, free_port, wait_for_status, wait_until
from tests.receivers import Receiver

SECRET = secrets.token_hex(16)
FRAMES = 3
ROOT = Path(__file__).resolve().parents[2]
SUFFIX = re.compile(r"_(bucket|count|sum|total|created)$")


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a /metrics answer, by name and labels."""
    answer = HTTP.get(url, timeout=20)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture()
def hooks() -> Iterator[tuple[Receiver, Receiver]]:
    with Receiver(SECRET).running() as job_hook, Receiver(SECRET, codes=(500,)).running() as farm_hook:
        yield job_hook, farm_hook


def test_a_real_job_is_posted_and_counted(prod_env, database, tiny_blend, tmp_path, hooks):
    job_hook, farm_hook = hooks
    env = dict(
        prod_env,
        FARM_QUEUE=f"{prod_env['FARM_QUEUE']}-{uuid.uuid4().hex[:8]}",
        FARM_WEBHOOK_URL=farm_hook.url,
        FARM_WEBHOOK_SECRET=SECRET,
        FARM_WEBHOOK_ALLOW_PRIVATE="1",  # the receivers are this test's, on loopback
        FARM_WEBHOOK_BACKOFF_SECONDS="1",
        FARM_JANITOR_SECONDS="1",
    )
    procs = FarmProcesses(env, tmp_path)
    try:
        procs.start_web()
        port = free_port()
        worker = procs.start_worker(f"metrics-{uuid.uuid4().hex[:6]}", {"FARM_METRICS_PORT": str(port)})

        command = ["submit", str(tiny_blend), "--frames", f"1-{FRAMES}", "--chunk-size", "1", "--json"]
        submitted = subprocess.run(
            [sys.executable, "-m", "farm", *command, "--notify-url", job_hook.url],
            env=procs.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert submitted.returncode == 0, submitted.stderr
        job_id = json.loads(submitted.stdout[submitted.stdout.index("{") :])["id"]
        wait_for_status(procs.url, job_id, {"COMPLETED"})

        # the job's own receiver: one signed POST, the whole JOB as the API gives it
        wait_until(lambda: job_hook.received, timeout=30, what="the notify_url webhook")
        (post,) = job_hook.received
        assert post.signed and post.json()["event"] == "job.completed"
        job = post.json()["job"]
        assert job["id"] == job_id and job["status"] == "COMPLETED"
        assert job["render"]["frames_rendered"] == FRAMES
        assert job["asset"]["url"] == f"{procs.url}/api/jobs/{job_id}/asset"

        # FARM_WEBHOOK_URL answered 500 first: the worker's janitor has its courier try again
        wait_until(lambda: len(farm_hook.received) == 2, timeout=60, what="the retried webhook")
        assert all(p.signed for p in farm_hook.received) and farm_hook.received[0].body == farm_hook.received[1].body

        def shown() -> dict[str, dict]:
            job = HTTP.get(f"{procs.url}/api/jobs/{job_id}", timeout=10).json()["job"]
            return {d["target"]: d for d in job["webhooks"]}

        wait_until(lambda: shown()["farm"]["status"] == "DELIVERED", timeout=20, what="the retry's record")
        assert [a["status_code"] for a in shown()["farm"]["attempts"]] == [500, 200]
        assert [a["status_code"] for a in shown()["notify_url"]["attempts"]] == [200]

        # the web app: the database's and the broker's figures at scrape time
        web = scrape(f"{procs.url}/metrics")
        completed = HTTP.get(f"{procs.url}/api/jobs", params={"status": "COMPLETED", "limit": 1}, timeout=10)
        assert value(web, "farm_jobs", status="COMPLETED") == completed.json()["total"] >= 1
        assert value(web, "farm_jobs", status="CANCELING") >= 0  # every status is there, zero or not
        assert value(web, "farm_frames_rendered_total", worker=worker) == FRAMES
        devices = HTTP.get(f"{procs.url}/api/workers", timeout=10).json()["workers"]
        (mine,) = [w for w in devices if w["hostname"] == worker]
        assert value(web, "farm_workers", status="ONLINE", device=mine["devices"][0]) >= 1
        assert value(web, "farm_broker_up") == 1
        assert value(web, "farm_queue_messages", queue=env["FARM_QUEUE"], state="waiting") == 0

        # the worker's own exporter: its pool process's frames and packaging, its main process's janitor
        mine_now = scrape(f"http://127.0.0.1:{port}/metrics")
        device = job_device = None
        for (name, labels), count in mine_now.items():
            if name == "farm_frame_render_seconds_count" and dict(labels)["worker"] == worker:
                device, job_device = dict(labels)["device"], count
        assert job_device == FRAMES and device and device != "unknown"
        seconds = value(mine_now, "farm_frame_render_seconds_sum", worker=worker, device=device)
        assert 0 < seconds < 120
        assert value(mine_now, "farm_packaging_seconds_count", outcome="completed") == 1
        # both receivers' first attempts (one failed) and the retry: all sent by this worker's processes
        assert value(mine_now, "farm_webhook_attempts_total", outcome="delivered") == 2
        assert value(mine_now, "farm_webhook_attempts_total", outcome="failed") == 1
        assert value(mine_now, "farm_chunk_retries_total", reason="silent") == 0  # no renderer went quiet

        # the shipped dashboard queries only what the farm serves (scraped just now) or declares (a counter with
        # labels appears with its first count: no chunk failed here)
        declared = {m._name for m in vars(farm_metrics).values() if isinstance(m, MetricWrapperBase)}
        served = {SUFFIX.sub("", name) for name, _ in {**web, **mine_now}}
        dashboard = json.loads((ROOT / "deploy/grafana/farm.json").read_text())
        exprs = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
        queried = {SUFFIX.sub("", name) for name in re.findall(r"\bfarm_\w+", exprs)}
        assert queried <= served | declared, queried - served - declared
        assert len(queried & served) >= len(queried) - 2
    finally:
        procs.stop_all()
