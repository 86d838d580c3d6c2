"""Fault injection: each test runs a real job with real Blender on private Redis, Postgres and a cuttable S3 proxy,
breaks something mid-job, and asserts the job still ends COMPLETED with every frame in its zip exactly once (or,
where the fault is the scene's, FAILED with the reason)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from tests.helpers import FarmProcesses, alive, blender_pids, check_zip, get_job, submit, wait_for_status, wait_until
from tests.servers import CuttableProxy, PrivatePostgres, PrivateRedis

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str):  # type: ignore[no-untyped-def]
    with contextlib.ExitStack() as stack:
        redis_server = PrivateRedis(tmp_path_factory.mktemp("redis"))
        stack.callback(redis_server.stop)
        postgres = PrivatePostgres()
        stack.callback(postgres.stop)
        s3 = CuttableProxy(int(s3_endpoint.rsplit(":", 1)[1]))
        stack.callback(s3.close)
        yield SimpleNamespace(redis=redis_server, postgres=postgres, s3=s3)


@pytest.fixture()
def make_farm(private, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A farm on the private servers, with short timeouts so faults are noticed in seconds."""
    farms: list[FarmProcesses] = []

    def make(**extra: str) -> FarmProcesses:
        run = uuid.uuid4().hex[:8]
        env = {
            "FARM_INSTANCE_DIR": str(tmp_path / "instance"),
            "FARM_DATABASE_URL": private.postgres.url,
            "FARM_BROKER_URL": private.redis.url,
            "FARM_RESULT_BACKEND": f"db+{private.postgres.url}",
            "FARM_STORAGE_URL": f"s3://fault-{run}/renders",
            "FARM_S3_ENDPOINT_URL": f"http://127.0.0.1:{private.s3.port}",
            "FARM_QUEUE": f"fault-{run}",
            "FARM_HEARTBEAT_SECONDS": "1",
            "FARM_WORKER_TIMEOUT_SECONDS": "4",
            "FARM_JANITOR_SECONDS": "1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            **extra,
        }
        (tmp_path / f"logs-{run}").mkdir()
        farm = FarmProcesses(env, tmp_path / f"logs-{run}")
        farms.append(farm)
        farm.start_web()
        return farm

    yield make
    for farm in farms:
        farm.stop_all()


def api(farm: FarmProcesses, path: str) -> Any:
    response = requests.get(f"{farm.url}/api{path}", timeout=30)
    response.raise_for_status()
    return response.json()


def rendering_chunk(farm: FarmProcesses, job_id: str, min_frames: int = 1) -> dict[str, Any] | None:
    """A chunk that is RENDERING and has stored at least `min_frames` frames, if there is one now."""
    chunks = api(farm, f"/jobs/{job_id}/chunks")["chunks"]
    done = {f["frame"] for f in api(farm, f"/jobs/{job_id}/frames")["frames"] if f["status"] == "DONE"}
    for chunk in chunks:
        inside = len([f for f in range(chunk["frame_start"], chunk["frame_end"] + 1) if f in done])
        if chunk["status"] == "RENDERING" and inside >= min_frames:
            return chunk
    return None


def assert_complete_once(
    farm: FarmProcesses, job_id: str, frames: range, size: tuple[int, int], timeout: float = 300
) -> dict[str, Any]:
    job = wait_for_status(farm.url, job_id, {"COMPLETED", "FAILED"}, timeout=timeout)
    assert job["status"] == "COMPLETED", job
    check_zip(requests.get(job["asset"]["url"], timeout=60).content, name=job["name"], frames=frames, size=size)
    events = api(farm, f"/jobs/{job_id}/events")["events"]
    renders = Counter(e["subject"] for e in events if e["kind"] == "frame")
    assert sorted(int(s.split("/")[1]) for s in renders) == list(frames)
    assert set(renders.values()) == {1}, renders  # no frame was recorded twice
    return job


@pytest.mark.parametrize("what", ["whole worker", "pool process"])
def test_killed_worker_mid_chunk_loses_nothing(make_farm, slow_blend, what):
    farm = make_farm()
    doomed = farm.start_worker("doomed")
    job_id = submit(farm.url, slow_blend, name="kill", frame_start=1, frame_end=8, chunk_size=4).json()["job"]["id"]
    chunk = wait_until(lambda: rendering_chunk(farm, job_id), timeout=120, what="a chunk with a stored frame")
    assert chunk["worker"] == doomed
    doomed_blender = blender_pids(farm.url, job_id)
    assert doomed_blender and all(alive(pid) for pid in doomed_blender)
    # Killed first, the rescuer started after: a worker's start-up takes longer than the rest of a 4-frame chunk.
    if what == "whole worker":
        farm.stop("worker-doomed", signal.SIGKILL)  # the main process, its pool and (by PDEATHSIG) Blender
    else:
        pool = subprocess.run(["pgrep", "-P", str(farm.procs["worker-doomed"].pid)], capture_output=True, text=True)
        for pid in pool.stdout.split():
            subprocess.run(["kill", "-9", pid], check=True)
    farm.start_worker("rescuer")
    wait_until(
        lambda: not any(alive(pid) for pid in doomed_blender),
        timeout=10,
        what="the killed worker's Blender to die with it",
    )
    assert_complete_once(farm, job_id, range(1, 9), (320, 180))
    chunks = api(farm, f"/jobs/{job_id}/chunks")["chunks"]
    assert max(c["attempts"] for c in chunks) >= 2  # the interrupted chunk was rendered again


def test_redis_restarted_empty_mid_job(make_farm, private, tiny_blend):
    farm = make_farm()
    farm.start_worker("w")
    job_id = submit(farm.url, tiny_blend, name="redis", frame_start=1, frame_end=6, chunk_size=1).json()["job"]["id"]
    wait_until(lambda: get_job(farm.url, job_id)["render"]["frames_rendered"] >= 1, timeout=120, what="the first frame")
    private.redis.restart_empty()  # every queued render task and the chord's bookkeeping are gone

    def finished_or_worker_restarted() -> bool:
        """kombu 5.7 can die reconnecting at the very moment Redis goes ("Unrecoverable error", an AttributeError
        in its redis transport): then restart the worker, as the compose file's restart policy would."""
        if farm.procs["worker-w"].poll() is not None:
            assert "Unrecoverable error: AttributeError" in farm.log("worker-w"), farm.log("worker-w")[-3000:]
            farm.stop("worker-w")
            farm.start_worker("w")
        return get_job(farm.url, job_id)["status"] in ("COMPLETED", "FAILED")

    wait_until(finished_or_worker_restarted, timeout=300, what="the job to end")
    job = assert_complete_once(farm, job_id, range(1, 7), (64, 36))
    assert job["render"]["frames_rendered"] == 6


def test_postgres_restarted_mid_job(make_farm, private, slow_blend):
    farm = make_farm()
    farm.start_worker("w")
    job_id = submit(farm.url, slow_blend, name="pg", frame_start=1, frame_end=6, chunk_size=3).json()["job"]["id"]
    wait_until(lambda: rendering_chunk(farm, job_id), timeout=120, what="a chunk with a stored frame")
    private.postgres.restart()
    assert_complete_once(farm, job_id, range(1, 7), (320, 180))


def test_s3_unreachable_for_20_seconds(make_farm, private, tiny_blend):
    farm = make_farm()
    farm.start_worker("w")
    job_id = submit(farm.url, tiny_blend, name="s3", frame_start=1, frame_end=6, chunk_size=2).json()["job"]["id"]
    wait_until(lambda: get_job(farm.url, job_id)["render"]["frames_rendered"] >= 1, timeout=120, what="the first frame")
    private.s3.cut()
    cut_at = time.monotonic()
    time.sleep(20)  # frames finish and packaging starts while storage is away
    stuck = get_job(farm.url, job_id)
    assert stuck["status"] != "COMPLETED" and stuck["status"] != "FAILED", stuck
    private.s3.restore()
    assert time.monotonic() - cut_at >= 20
    assert_complete_once(farm, job_id, range(1, 7), (64, 36))


def crashing_blender(folder: Path, *, always: bool) -> Path:
    """A FARM_BLENDER stand-in that dies of SIGSEGV when asked to render (on its first render, or always), else
    runs the bpy module — so the worker's device detection at start-up still works. It dies when the work reaches
    it (the chunk's spec, on stdin for a warm Blender), not when it starts: a worker starts a spare before any job."""
    marker = folder / "crashed-once"
    script = folder / ("blender-crash-always" if always else "blender-crash-once")
    die = f'exec "{sys.executable}" -c "import os, signal, sys; sys.stdin.readline(); os.kill(os.getpid(), 11)"'
    crash = die if always else f'if [ ! -e "{marker}" ]; then touch "{marker}"; {die}; fi'
    script.write_text(
        "#!/bin/bash\n"
        'while [ "$1" != "--python" ]; do shift; done\n'
        'script="$2"; shift 2\n'
        f'case "$script" in *render_script.py) {crash};; esac\n'
        f'exec "{sys.executable}" -P "$script" "$@"\n'
    )
    script.chmod(0o755)
    return script


def test_blender_crash_is_retried(make_farm, tiny_blend, tmp_path):
    farm = make_farm()
    farm.start_worker("w", {"FARM_BLENDER": str(crashing_blender(tmp_path, always=False))})
    job_id = submit(farm.url, tiny_blend, name="crash", frame_start=1, frame_end=4, chunk_size=2).json()["job"]["id"]
    assert_complete_once(farm, job_id, range(1, 5), (64, 36))
    chunks = api(farm, f"/jobs/{job_id}/chunks")["chunks"]
    assert sorted(c["attempts"] for c in chunks) == [1, 2]
    events = api(farm, f"/jobs/{job_id}/events")["events"]
    failed = [e for e in events if e["kind"] == "chunk" and e["to"] == "FAILED"]
    assert len(failed) == 1 and "signal 11" in failed[0]["reason"]


def test_blender_crashing_every_time_fails_the_job_after_the_retry_limit(make_farm, tiny_blend, tmp_path):
    farm = make_farm(FARM_CHUNK_ATTEMPTS="3")
    farm.start_worker("w", {"FARM_BLENDER": str(crashing_blender(tmp_path, always=True))})
    job_id = submit(farm.url, tiny_blend, name="doomed", frame_start=1, frame_end=2, chunk_size=2).json()["job"]["id"]
    job = wait_for_status(farm.url, job_id, {"COMPLETED", "FAILED"}, timeout=120)
    assert job["status"] == "FAILED"
    assert "failed 3 times" in job["error"] and "signal 11" in job["error"]
    assert [c["attempts"] for c in api(farm, f"/jobs/{job_id}/chunks")["chunks"]] == [3]


def test_failing_worker_is_passed_over_and_blocklisted(make_farm, tiny_blend, tmp_path):
    farm = make_farm(FARM_BLOCKLIST_FAILURES="1")
    bad = farm.start_worker("bad", {"FARM_BLENDER": str(crashing_blender(tmp_path, always=True))})
    good = farm.start_worker("good")
    job_id = submit(farm.url, tiny_blend, name="blocklist", frame_start=1, frame_end=6, chunk_size=1).json()["job"][
        "id"
    ]
    assert_complete_once(farm, job_id, range(1, 7), (64, 36))
    frames = api(farm, f"/jobs/{job_id}/frames")["frames"]
    assert {f["worker"] for f in frames} == {good}
    events = api(farm, f"/jobs/{job_id}/events")["events"]
    # one failure blocklisted the bad worker: its retry and every later chunk went to the good one
    assert [e["actor"] for e in events if e["kind"] == "chunk" and e["to"] == "FAILED"] == [bad]


def test_two_janitors_three_workers_render_every_frame_once(make_farm, tiny_blend):
    farm = make_farm()
    for name in ("a", "b", "c"):
        farm.start_worker(name)
    farm.start_janitor("j1")
    farm.start_janitor("j2")
    job_id = submit(farm.url, tiny_blend, name="crowd", frame_start=1, frame_end=18, chunk_size=2).json()["job"]["id"]
    wait_until(lambda: get_job(farm.url, job_id)["render"]["frames_rendered"] >= 4, timeout=120, what="a few frames")
    farm.stop("worker-b", signal.SIGKILL)  # give the janitors something to race over
    assert_complete_once(farm, job_id, range(1, 19), (64, 36))


def test_chunk_longer_than_the_visibility_timeout_renders_once(make_farm, slow_blend):
    farm = make_farm(FARM_BROKER_VISIBILITY_SECONDS="3")
    farm.start_worker("a")
    farm.start_worker("b")
    job_id = submit(farm.url, slow_blend, name="slowpoke", frame_start=1, frame_end=10, chunk_size=10).json()["job"][
        "id"
    ]
    job = assert_complete_once(farm, job_id, range(1, 11), (320, 180))
    chunk = api(farm, f"/jobs/{job_id}/chunks")["chunks"][0]
    assert chunk["attempts"] == 1, chunk  # claimed once...
    logs = farm.log("worker-a") + farm.log("worker-b")
    redelivered = [ln for ln in logs.splitlines() if "farm.render_chunk[" in ln and "succeeded" in ln]
    # ...although Redis delivered its task twice: the second copy found the chunk alive and skipped it
    assert sorted(ln.rsplit(" ", 1)[1] for ln in redelivered) == ["'DONE'", "'skipped'"], redelivered
    assert job["render"]["frames_rendered"] == 10
