"""`farm worker --gpus …`: one Celery worker process per GPU (each pinned to its card through Cycles' device list,
so the numbering never depends on CUDA_VISIBLE_DEVICES ordering), plus optional CPU-only workers.

Each child is a whole `farm worker` of its own — own name, own row in the workers table, own janitor — so the
scheduler, the API and the fault handling see ordinary workers; with FARM_METRICS_PORT, each serves its metrics
on a port of its own (that port, the next, ...). This process only starts them, passes signals on,
and when one exits stops the rest and exits with its status, for systemd or compose to restart the set.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import click

from farm.blender import devices
from farm.blender.devices import WorkerPlan
from farm.config import load_settings


def child_command(plan: WorkerPlan, *, concurrency: int, loglevel: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "farm",
        "worker",
        "--name",
        plan.name,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        loglevel,
        "--queues",
        ",".join(plan.queues),
    ]


def supervise(plans: Sequence[WorkerPlan], *, concurrency: int, loglevel: str) -> int:
    children: list[subprocess.Popen[bytes]] = []
    metrics_port = load_settings().metrics_port
    for index, plan in enumerate(plans):
        env = dict(os.environ, **{devices.ENV: devices.to_env(plan.devices)})
        if metrics_port:  # each worker process serves its own metrics, on the next port
            env["FARM_METRICS_PORT"] = str(metrics_port + index)
        click.echo(f"starting {plan.name} on {', '.join(devices.describe(plan.devices))}", err=True)
        children.append(subprocess.Popen(child_command(plan, concurrency=concurrency, loglevel=loglevel), env=env))

    stopping: list[int] = []

    def stop_all(signum: int = signal.SIGTERM, *_: object) -> None:
        """Pass the stop on once: a second SIGTERM turns Celery's warm shutdown into death by the signal."""
        if stopping:
            return
        stopping.append(signum)
        for child in children:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    finally:
        stop_all()
        for child in children:
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return next((c.returncode for c in children if c.returncode), 0)
