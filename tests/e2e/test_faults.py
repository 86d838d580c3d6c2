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

import boto3
import psycopg
import pytest

from tests.helpers import (
    HTTP,
    FarmProcesses,
    alive,
    blender_pids,
    check_zip,
    free_port,
    get_job,
    holds_for,
    submit,
    wait_for_status,
    wait_until,
)
from tests.servers import CuttableProxy, PrivatePostgres, PrivateRedis, SmallDisk


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str):  # type: ignore[no-untyped-def]
    with contextlib.ExitStack() as stack:
        redis_server = PrivateRedis(tmp_path_factory.mktemp("redis"))
        stack.callback(redis_server.stop)
        postgres = PrivatePostgres()
        stack.callback(postgres.stop)
        s3 = CuttableProxy(int(s3_endpoint.rsplit(":", 1)[1]))
        stack.callback(s3.close)
        # One bucket for the one database: the database records which project files storage holds.
        bucket = f"fault-{uuid.uuid4().hex[:8]}"
        yield SimpleNamespace(redis=redis_server, postgres=postgres, s3=s3, bucket=bucket)


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
            "FARM_STORAGE_URL": f"s3://{private.bucket}/renders",
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
    response = HTTP.get(f"{farm.url}/api{path}", timeout=30)
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
    check_zip(HTTP.get(job["asset"]["url"], timeout=60).content, name=job["name"], frames=frames, size=size)
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
    holds_for(  # frames finish and packaging starts while storage is away, for all of the 20 s
        lambda: get_job(farm.url, job_id)["status"] not in {"COMPLETED", "FAILED"},
        seconds=20,
        what="the job unfinished while S3 is unreachable",
    )
    private.s3.restore()
    assert time.monotonic() - cut_at >= 20
    assert_complete_once(farm, job_id, range(1, 7), (64, 36))


def crashing_blender(folder: Path, *, always: bool, then: str = "os.kill(os.getpid(), 11)") -> Path:
    """A FARM_BLENDER stand-in that dies of SIGSEGV (or does `then`, Python) when asked to render (on its first
    render, or always), else runs the bpy module — so the worker's device detection at start-up still works. It
    dies when the work reaches it (the chunk's spec, on stdin for a warm Blender), not when it starts: a worker
    starts a spare before any job."""
    marker = folder / "crashed-once"
    script = folder / f"blender-{'always' if always else 'once'}-{uuid.uuid4().hex[:6]}"
    die = f'exec "{sys.executable}" -c "import os, signal, sys, time; sys.stdin.readline(); {then}"'
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


def chunk_failures(farm: FarmProcesses, job_id: str) -> list[dict[str, Any]]:
    return [e for e in api(farm, f"/jobs/{job_id}/events")["events"] if e["kind"] == "chunk" and e["to"] == "FAILED"]


def test_full_disk_fails_the_chunk_at_once_and_a_worker_with_room_renders_it(make_farm, slow_blend, tmp_path):
    """The worker's cache (its Blender log, its frames, its sources) on a 64 MiB tmpfs that fills mid-chunk: the
    chunk fails within seconds as "worker disk full", keeps its stored frames, and the retry goes to the worker with
    room; so does the job's last chunk, which the full worker passes on instead of taking it."""
    disk = SmallDisk(tmp_path / "small-cache", 64)
    try:
        farm = make_farm()
        small = farm.start_worker("small", {"FARM_CACHE_DIR": str(disk.path), "FARM_MIN_FREE_GB": "0.005"})
        roomy = farm.start_worker("roomy")
        job_id = submit(farm.url, slow_blend, name="disk", frame_start=1, frame_end=12, chunk_size=4).json()["job"][
            "id"
        ]

        def small_stored_a_frame() -> bool:
            return any(f["worker"] == small for f in api(farm, f"/jobs/{job_id}/frames")["frames"])

        wait_until(small_stored_a_frame, timeout=120, what="the small worker to store a frame")
        disk.fill()
        filled = time.monotonic()
        failed = wait_until(lambda: chunk_failures(farm, job_id), timeout=60, what="the chunk to fail")
        assert time.monotonic() - filled < 30, "the full disk was not noticed within seconds"
        assert [(e["actor"], e["reason"].split(":")[0]) for e in failed] == [(small, "worker disk full")], failed
        kept = {f["frame"] for f in api(farm, f"/jobs/{job_id}/frames")["frames"] if f["worker"] == small}
        assert kept, "the frames stored before the disk filled were lost"
        me = next(w for w in api(farm, "/workers")["workers"] if w["hostname"] == small)
        assert me["health"].startswith("worker disk full"), me
        assert any(
            "unwell: worker disk full" in (e["reason"] or "") for e in api(farm, f"/workers/{small}/events")["events"]
        )
        assert_complete_once(farm, job_id, range(1, 13), (320, 180))
        frames = api(farm, f"/jobs/{job_id}/frames")["frames"]
        assert {f["frame"] for f in frames if f["worker"] == small} == kept  # nothing more after the disk filled
        assert {f["worker"] for f in frames} == {small, roomy}
        assert len(chunk_failures(farm, job_id)) == 1  # the next chunk was passed on, not taken and failed
    finally:
        disk.drain()
        disk.close()


def test_a_helper_thread_that_dies_fails_the_chunk_at_once(make_farm, tiny_blend, tmp_path):
    """Blender sends an event nobody can parse (nested past Python's recursion limit): the thread that reads its
    events dies. The chunk fails at once with that exception as its reason, not after FARM_FRAME_TIMEOUT_SECONDS
    (4 h by default)."""
    farm = make_farm(FARM_CHUNK_ATTEMPTS="1")
    unreadable = "os.write(int(os.environ['FARM_EVENTS_FD']), b'[' * 200000 + b'\\n'); time.sleep(600)"
    farm.start_worker("w", {"FARM_BLENDER": str(crashing_blender(tmp_path, always=True, then=unreadable))})
    job_id = submit(farm.url, tiny_blend, name="unreadable", frame_start=1, frame_end=2, chunk_size=2).json()["job"][
        "id"
    ]
    job = wait_for_status(farm.url, job_id, {"COMPLETED", "FAILED"}, timeout=60)
    assert job["status"] == "FAILED" and "RecursionError" in job["error"], job


def test_blender_killed_by_sigkill_says_so_with_its_peak_memory(make_farm, tiny_blend, tmp_path):
    """Blender takes ~300 MiB, then dies of a SIGKILL the farm did not send (as the OOM killer's): the reason says
    signal 9, not the farm, and the peak resident memory sampled from /proc while it ran."""
    farm = make_farm(FARM_CHUNK_ATTEMPTS="1")
    oom = "hog = b'x' * (300 * 2**20); time.sleep(3); os.kill(os.getpid(), 9)"
    farm.start_worker("w", {"FARM_BLENDER": str(crashing_blender(tmp_path, always=True, then=oom))})
    job_id = submit(farm.url, tiny_blend, name="oom", frame_start=1, frame_end=2, chunk_size=2).json()["job"]["id"]
    job = wait_for_status(farm.url, job_id, {"COMPLETED", "FAILED"}, timeout=60)
    assert job["status"] == "FAILED" and "killed by signal 9, not by the farm" in job["error"], job
    peak = int(job["error"].split("peak resident memory of ")[1].split(" MiB")[0])
    assert 300 <= peak < 1000, job["error"]


SLEEP_SHIM = """import select, time

def _sleep(seconds):
    select.select([], [], [], seconds)

time.sleep = _sleep
"""


def faked_clock(folder: Path, offset: str) -> list[str]:
    """Debian's faketime: the worker's process sees its wall clock moved by `offset` (Blender does not: its
    environment is an allow-list). Its monotonic clock is left alone, as on a real machine whose wall clock is off;
    libfaketime 0.9.10 then turns Python's absolute monotonic sleeps (clock_nanosleep) into EINVAL, so time.sleep
    waits in select() instead (a sitecustomize for that process only), and faked monotonic clocks would hang
    Python's lock timeouts instead."""
    (folder / "sitecustomize.py").write_text(SLEEP_SHIM)
    return ["env", "FAKETIME_DONT_FAKE_MONOTONIC=1", f"PYTHONPATH={folder}", "faketime", "-f", offset]


def test_workers_with_clocks_90_seconds_off_are_judged_by_the_database_clock(make_farm, slow_blend, tmp_path):
    farm = make_farm()
    behind = farm.start_worker("behind", prefix=faked_clock(tmp_path, "-90s"))  # shown OFFLINE at once before
    ahead = farm.start_worker("ahead", prefix=faked_clock(tmp_path, "+90s"))
    job_id = submit(farm.url, slow_blend, name="clocks", frame_start=1, frame_end=8, chunk_size=2).json()["job"]["id"]
    not_online: list[dict[str, Any]] = []

    def watch() -> bool:
        workers = api(farm, "/workers")["workers"]  # (the module's earlier tests left theirs OFFLINE)
        not_online.extend(w for w in workers if w["hostname"] in (behind, ahead) and w["status"] != "ONLINE")
        return get_job(farm.url, job_id)["status"] in ("COMPLETED", "FAILED")

    wait_until(watch, timeout=300, what="the job to end", interval=0.5)
    assert not not_online, not_online
    assert_complete_once(farm, job_id, range(1, 9), (320, 180))
    assert [c["attempts"] for c in api(farm, f"/jobs/{job_id}/chunks")["chunks"]] == [1, 1, 1, 1]  # none re-queued
    frames = api(farm, f"/jobs/{job_id}/frames")["frames"]
    assert {f["worker"] for f in frames} == {behind, ahead}
    workers = {w["hostname"]: w for w in api(farm, "/workers")["workers"]}
    assert 85 < workers[behind]["clock_offset"] < 95 and -95 < workers[ahead]["clock_offset"] < -85, workers
    assert workers[behind]["clock_warning"] and workers[ahead]["clock_warning"]
    assert HTTP.get(f"{farm.url}/workers", timeout=30).text.count('class="num clock warn"') == 2
    farm.stop("worker-behind", signal.SIGKILL)  # a dead one is still found within the timeout (4 s here)
    killed = time.monotonic()
    wait_until(
        lambda: any(w["hostname"] == behind and w["status"] == "OFFLINE" for w in api(farm, "/workers")["workers"]),
        timeout=30,
        what="the killed worker to show OFFLINE",
    )
    assert time.monotonic() - killed < 4 + 3


def stored_frames(farm: FarmProcesses, job_id: str) -> list[str]:
    """The frame images in storage under the job (not their thumbnails)."""
    bucket, _, prefix = farm.env["FARM_STORAGE_URL"].removeprefix("s3://").partition("/")
    client = boto3.client("s3", endpoint_url=farm.env["FARM_S3_ENDPOINT_URL"])
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/jobs/{job_id}/frames/")
    return [o["Key"] for o in listed.get("Contents", [])]


def test_worker_cut_off_from_postgres_loses_its_chunk_and_stores_nothing_more(make_farm, private, slow_blend):
    """One worker's Postgres goes through a proxy that is cut while it renders (Redis and S3 stay reachable): the
    janitor gives the chunk to another worker, and when the partition heals the first one sees it lost the claim,
    stops its Blender and stores nothing more for that chunk."""
    proxy = CuttableProxy(private.postgres.port)
    try:
        farm = make_farm()
        via_proxy = private.postgres.url.replace(f":{private.postgres.port}/", f":{proxy.port}/")
        cut = farm.start_worker("cut", {"FARM_DATABASE_URL": via_proxy, "FARM_RESULT_BACKEND": f"db+{via_proxy}"})
        job_id = submit(farm.url, slow_blend, name="split", frame_start=1, frame_end=10, chunk_size=10).json()["job"][
            "id"
        ]
        wait_until(lambda: rendering_chunk(farm, job_id), timeout=120, what="a chunk with a stored frame")
        cut_blender = blender_pids(farm.url, job_id)
        other = farm.start_worker("other")
        proxy.cut()

        def taken_over() -> bool:
            (chunk,) = api(farm, f"/jobs/{job_id}/chunks")["chunks"]
            frames = api(farm, f"/jobs/{job_id}/frames")["frames"]
            return chunk["worker"] == other and any(f["worker"] == other for f in frames)

        wait_until(taken_over, timeout=120, what="the other worker to render the chunk")
        before_cut = {f["frame"] for f in api(farm, f"/jobs/{job_id}/frames")["frames"] if f["worker"] == cut}
        assert all(alive(pid) for pid in cut_blender)  # the cut-off worker knows nothing yet
        proxy.restore()
        wait_until(lambda: not any(alive(p) for p in cut_blender), timeout=30, what="the cut-off Blender to stop")
        assert_complete_once(farm, job_id, range(1, 11), (320, 180))
        frames = api(farm, f"/jobs/{job_id}/frames")["frames"]
        assert {f["frame"] for f in frames if f["worker"] == cut} == before_cut
        assert {f["worker"] for f in frames} == {cut, other}
        assert len(stored_frames(farm, job_id)) == 10  # whatever it uploaded after the cut was taken back
        assert "taken back" in farm.log("worker-cut")
    finally:
        proxy.close()


def task_ids(database_url: str, job_id: str) -> dict[int, str]:
    """Each chunk's task id, as the database has it."""
    with psycopg.connect(database_url) as conn:
        return dict(conn.execute("SELECT index, task_id FROM chunks WHERE job_id = %s", (job_id,)).fetchall())


def test_a_job_whose_tasks_were_never_sent_is_rendered_and_packaged(make_farm, private, tiny_blend):
    """The web process commits a job's chunks and answers before it sends their tasks. Here it never can (its broker
    is a port nobody listens on), as if it died right after answering: the janitor of the worker's process finds
    the chunks whose tasks the broker does not hold, sends them, and the job is rendered and packaged all the same
    (no chord ever waited on its tasks: the last chunk, or the janitor, sends the packaging)."""
    farm = make_farm(FARM_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0")
    response = submit(farm.url, tiny_blend, name="unsent", frame_start=1, frame_end=6, chunk_size=2)
    assert response.status_code == 201, response.text
    job_id = response.json()["job"]["id"]
    first = task_ids(private.postgres.url, job_id)
    assert len(first) == 3 and all(first.values())  # committed with their task ids before the answer
    farm.start_worker("w", extra_env={"FARM_BROKER_URL": private.redis.url})
    assert_complete_once(farm, job_id, range(1, 7), (64, 36))
    again = task_ids(private.postgres.url, job_id)
    assert all(again[index] != task for index, task in first.items())  # each rendered by a task the janitor sent
    wait_until(lambda: "could not send the tasks of job" in farm.log("web"), timeout=120, what="the web's give-up")
