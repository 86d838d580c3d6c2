"""The whole farm as a user runs it in production mode: `farm web` and `farm worker` processes, Redis as broker,
Postgres for tables and Celery results, a moto S3 server for storage, real Blender rendering a tiny scene."""

import hashlib
import time
from pathlib import Path

from tests.helpers import HTTP, alive, blender_pids, check_zip, get_job, holds_for, submit, wait_for_status, wait_until


def test_render_job_end_to_end_over_http(farm, tiny_blend, s3_endpoint, prod_env):
    response = submit(farm.url, tiny_blend, name="cubes", frame_start=1, frame_end=6, chunk_size=2)
    assert response.status_code == 201, response.text
    job_id = response.json()["job"]["id"]

    job = wait_for_status(farm.url, job_id, {"COMPLETED", "FAILED"})
    assert job["status"] == "COMPLETED", job
    assert job["render"]["frames_rendered"] == 6 and job["render"]["latest_frame_rendered"] in range(1, 7)
    assert job["render"]["average_render_time"] > 0 and job["render"]["eta_seconds"] == 0
    assert job["worker_host"] == "w1@test"
    asset = job["asset"]
    assert asset["filename"] == "cubes-0001-0006.zip" and asset["size"] > 0
    assert asset["url"] == f"{farm.url}/api/jobs/{job_id}/asset"  # the API's own URL: a JOB holds no credential

    direct = HTTP.get(asset["url"], timeout=30)  # redirected to a presigned GET on the S3 server
    assert direct.url.startswith(s3_endpoint) and "X-Amz-Signature" in direct.url
    assert len(direct.content) == asset["size"]
    manifest = check_zip(direct.content, name="cubes", frames=range(1, 7), size=(64, 36))
    assert {e["worker"] for e in manifest["frames"]} == {"w1@test"}

    frames = HTTP.get(f"{farm.url}/api/jobs/{job_id}/frames", timeout=10).json()["frames"]
    assert [f["frame"] for f in frames] == list(range(1, 7))
    by_frame = {e["frame"]: e for e in manifest["frames"]}
    for frame in frames:
        assert frame["status"] == "DONE" and frame["worker"] == "w1@test" and frame["render_time"] > 0
        image = HTTP.get(frame["url"], timeout=10).content
        assert hashlib.sha256(image).hexdigest() == by_frame[frame["frame"]]["sha256"]

    chunks = HTTP.get(f"{farm.url}/api/jobs/{job_id}/chunks", timeout=10).json()["chunks"]
    assert [(c["frame_start"], c["frame_end"], c["status"], c["attempts"]) for c in chunks] == [
        (1, 2, "DONE", 1),
        (3, 4, "DONE", 1),
        (5, 6, "DONE", 1),
    ]
    log = HTTP.get(chunks[0]["log_url"], timeout=10).text
    assert "Fra:1" in log and '"event": "frame"' in log  # Blender's own output, kept, and the worker's events
    work = Path(prod_env["FARM_INSTANCE_DIR"]) / "cache" / "work"
    assert work.is_dir() and not [p for p in work.rglob("*") if p.is_file()]  # each chunk emptied its work folder
    kept = Path(prod_env["FARM_INSTANCE_DIR"]) / "cache" / "frames"  # the worker kept its frames for its packager,
    assert kept.is_dir() and not {e["sha256"] for e in manifest["frames"]} & {p.name for p in kept.iterdir()}  # and
    # the packager dropped them once they were zipped

    events = HTTP.get(f"{farm.url}/api/jobs/{job_id}/events", timeout=10).json()["events"]
    job_trail = [(e["from"], e["to"]) for e in events if e["kind"] == "job"]
    assert job_trail == [
        (None, "QUEUED"),
        ("QUEUED", "RENDERING"),
        ("RENDERING", "PACKAGING"),
        ("PACKAGING", "UPLOADING"),
        ("UPLOADING", "COMPLETED"),
    ]
    assert sorted(int(e["subject"].split("/")[1]) for e in events if e["kind"] == "frame") == list(range(1, 7))

    workers = HTTP.get(f"{farm.url}/api/workers", timeout=10).json()["workers"]
    me = next(w for w in workers if w["hostname"] == "w1@test")
    assert me["status"] == "ONLINE" and me["devices"] and me["frames_rendered"] >= 6
    assert me["devices"][0].startswith("CPU: ") and {f["device"] for f in frames} == {me["devices"][0]}
    assert me["average_render_time"] > 0 and me["last_heartbeat"].endswith("Z")
    assert me["current"] is None  # every chunk ended


def test_progress_is_live_then_cancel_stops_blender_and_retry_finishes(farm, slow_blend):
    job_id = submit(farm.url, slow_blend, name="slow", frame_start=1, frame_end=12, chunk_size=6).json()["job"]["id"]

    # frames_rendered moves while the first chunk is still rendering: frames are stored one by one
    job = wait_until(
        lambda: (j := get_job(farm.url, job_id))["render"]["frames_rendered"] >= 2 and j,
        timeout=120,
        what="two frames of the first chunk",
    )
    assert job["status"] == "RENDERING" and job["render"]["frames_rendered"] < 6
    assert job["render"]["chunks_rendering"] == 1 and job["render"]["eta_seconds"] > 0
    assert blender_running(farm.url, job_id)
    workers = HTTP.get(f"{farm.url}/api/workers", timeout=10).json()["workers"]
    busy = next(w for w in workers if w["current"])  # the monitor says who renders what
    assert busy["current"] == {"job_id": job_id, "chunk": 0, "frame_start": 1, "frame_end": 6, "owner": job["owner"]}

    response = HTTP.post(f"{farm.url}/api/jobs/{job_id}/cancel", timeout=10)
    assert response.status_code == 202 and response.json()["job"]["status"] in ("CANCELING", "CANCELED")
    canceled_at = time.monotonic()
    wait_until(lambda: not blender_running(farm.url, job_id), timeout=5, what="Blender of the canceled job to stop")
    job = wait_for_status(farm.url, job_id, {"CANCELED"}, timeout=15)
    assert time.monotonic() - canceled_at < 15
    kept = job["render"]["frames_rendered"]
    assert 2 <= kept < 12

    response = HTTP.post(f"{farm.url}/api/jobs/{job_id}/retry", timeout=10)
    assert response.status_code == 202 and response.json()["job"]["status"] == "QUEUED"
    job = wait_for_status(farm.url, job_id, {"COMPLETED", "FAILED"}, timeout=240)
    assert job["status"] == "COMPLETED", job
    check_zip(HTTP.get(job["asset"]["url"], timeout=30).content, name="slow", frames=range(1, 13), size=(320, 180))
    events = HTTP.get(f"{farm.url}/api/jobs/{job_id}/events", timeout=10).json()["events"]
    rendered = [e["subject"] for e in events if e["kind"] == "frame"]
    assert len(rendered) == len(set(rendered)) == 12  # frames kept across the cancel were not rendered again


def blender_running(base_url: str, job_id: str) -> bool:
    """Is any Blender process that took a chunk of this job still running?"""
    return any(alive(pid) for pid in blender_pids(base_url, job_id))


def test_workbench_jpeg_at_half_resolution(farm, tiny_blend):
    response = submit(
        farm.url,
        tiny_blend,
        name="wb",
        frame_start=2,
        frame_end=3,
        engine="BLENDER_WORKBENCH",
        output_format="JPEG",
        resolution_percentage=50,
    )
    assert response.status_code == 201, response.text
    job = wait_for_status(farm.url, response.json()["job"]["id"], {"COMPLETED", "FAILED"})
    assert job["status"] == "COMPLETED", job
    assert job["settings"]["engine"] == "BLENDER_WORKBENCH" and job["asset"]["filename"] == "wb-0002-0003.zip"
    manifest = check_zip(
        HTTP.get(job["asset"]["url"], timeout=30).content, name="wb", frames=range(2, 4), size=(32, 18), ext="jpg"
    )
    # no chunk size: the submission's probe rendered frame 2 with the job's settings, and it was kept, not redone
    assert [e["worker"].split("@")[0] for e in sorted(manifest["frames"], key=lambda e: e["frame"])] == ["probe", "w1"]
    events = HTTP.get(f"{farm.url}/api/jobs/{job['id']}/events", timeout=10).json()["events"]
    assert sorted(e["subject"] for e in events if e["kind"] == "frame") == [f"{job['id']}/2", f"{job['id']}/3"]


def test_gpu_job_on_a_cpu_only_farm_is_refused_and_never_renders_on_a_cpu(farm, tiny_blend):
    response = submit(farm.url, tiny_blend, name="needs-gpu", frame_start=1, frame_end=2, device="GPU")
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("no_gpu_worker", "device")
    assert "no online worker has a GPU" in error["message"]

    # A CPU-only worker told to take the GPU queue anyway must fail the job, saying why, not render it on the CPU.
    gpu_queue = farm.env["FARM_QUEUE"] + ".gpu"
    farm.start_worker("fake-gpu", queues=gpu_queue)
    try:
        response = submit(farm.url, tiny_blend, name="needs-gpu", frame_start=1, frame_end=2, device="GPU")
        assert response.status_code == 201, response.text
        job = wait_for_status(farm.url, response.json()["job"]["id"], {"COMPLETED", "FAILED"})
    finally:
        farm.stop("worker-fake-gpu")
    assert job["status"] == "FAILED" and job["asset"] is None and job["render"]["frames_rendered"] == 0
    assert "device GPU was asked for, but this worker has no GPU: Cycles found no OPTIX" in job["error"]
    chunks = HTTP.get(f"{farm.url}/api/jobs/{job['id']}/chunks", timeout=10).json()["chunks"]
    assert chunks[0]["status"] == "FAILED" and "device GPU" in chunks[0]["error"]
    assert {c["worker"] for c in chunks} - {None} == {"fake-gpu@test"}
    assert "device GPU" in HTTP.get(chunks[0]["log_url"], timeout=10).text


def test_disabled_worker_takes_no_work_until_enabled(farm, tiny_blend):
    stopped_before = farm.log("worker-w1").count("w1@test stopped consuming")
    response = HTTP.post(f"{farm.url}/api/workers/w1@test/disable", timeout=10)
    assert response.status_code == 202 and response.json()["worker"]["status"] == "DISABLED"
    try:
        wait_until(
            lambda: farm.log("worker-w1").count("w1@test stopped consuming") > stopped_before,
            timeout=30,
            what="the worker's next heartbeat to stop its consumer",
        )
        job_id = submit(farm.url, tiny_blend, name="parked", frame_start=1, frame_end=2).json()["job"]["id"]
        holds_for(
            lambda: get_job(farm.url, job_id)["status"] == "QUEUED",
            seconds=5,
            what="the job queued for a disabled worker",
        )
        workers = HTTP.get(f"{farm.url}/api/workers", timeout=10).json()["workers"]
        assert next(w for w in workers if w["hostname"] == "w1@test")["status"] == "DISABLED"
    finally:
        response = HTTP.post(f"{farm.url}/api/workers/w1@test/enable", timeout=10)
    assert response.status_code == 202 and response.json()["worker"]["status"] == "ONLINE"
    assert wait_for_status(farm.url, job_id, {"COMPLETED", "FAILED"})["status"] == "COMPLETED"
    assert HTTP.post(f"{farm.url}/api/workers/nobody@nowhere/disable", timeout=10).status_code == 404
    trail = HTTP.get(f"{farm.url}/api/workers/w1@test/events", timeout=10).json()["events"]
    assert [(e["from"], e["to"]) for e in trail][-2:] == [("ONLINE", "DISABLED"), ("DISABLED", "ONLINE")]
    admin = HTTP.get(f"{farm.url}/api/me", timeout=10).json()["user"]["name"]
    assert trail[-1]["reason"] == "enabled" and trail[-1]["actor"] == admin
