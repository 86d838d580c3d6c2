"""Warm Blender on real workers: consecutive chunks of one job reuse one Blender process with the file loaded;
FARM_WARM_BLENDER=0 starts a fresh one per chunk; killing the warm process mid-chunk loses only the frame it was
rendering (the rest of the chunk is rendered again by a fresh process, no stored frame twice)."""

import signal
import subprocess
from collections import Counter

import pytest

from tests.helpers import (
    HTTP,
    FarmProcesses,
    alive,
    blender_pids,
    farm_events,
    spare_blenders,
    submit,
    wait_for_status,
    wait_until,
)


@pytest.fixture()
def farm(own_farm):  # type: ignore[no-untyped-def]
    return own_farm


def api(farm: FarmProcesses, path: str):  # type: ignore[no-untyped-def]
    return HTTP.get(f"{farm.url}/api{path}", timeout=10).json()


def ready_events(farm: FarmProcesses, job_id: str) -> list[dict]:
    """The `ready` event of each chunk's log, in chunk order: Blender says whether the file was already loaded."""
    found = []
    for chunk in api(farm, f"/jobs/{job_id}/chunks")["chunks"]:
        events = farm_events(HTTP.get(chunk["log_url"], timeout=10).text)
        found.append(next(e for e in events if e["event"] == "ready"))
    return found


@pytest.mark.parametrize("warm", ["1", "0"])
def test_consecutive_chunks_reuse_the_loaded_file_only_when_warm(farm, tiny_blend, warm):
    farm.start_worker("w", {"FARM_WARM_BLENDER": warm})
    job_id = submit(farm.url, tiny_blend, name="warm", frame_start=1, frame_end=6, chunk_size=2).json()["job"]["id"]
    assert wait_for_status(farm.url, job_id, {"COMPLETED", "FAILED"})["status"] == "COMPLETED"
    ready = ready_events(farm, job_id)
    assert [e["warm"] for e in ready] == ([False, True, True] if warm == "1" else [False, False, False])
    assert len({e["pid"] for e in ready}) == (1 if warm == "1" else 3)
    # the job's Blender does not outlive the job: nothing of it is queued any more
    wait_until(lambda: not any(alive(e["pid"]) for e in ready), timeout=10, what="the job's Blender to exit")


def test_a_spare_blender_waits_for_the_next_job_and_becomes_its_process(farm, tiny_blend):
    farm.start_worker("w")
    worker = farm.procs["worker-w"].pid
    first = submit(farm.url, tiny_blend, name="one", frame_start=1, frame_end=2, chunk_size=1).json()["job"]["id"]
    assert wait_for_status(farm.url, first, {"COMPLETED", "FAILED"})["status"] == "COMPLETED"
    spares = wait_until(lambda: spare_blenders(worker), timeout=30, what="a spare Blender after the job")
    assert len(spares) == 1
    second = submit(farm.url, tiny_blend, name="two", frame_start=1, frame_end=2, chunk_size=1).json()["job"]["id"]
    assert wait_for_status(farm.url, second, {"COMPLETED", "FAILED"})["status"] == "COMPLETED"
    ready = ready_events(farm, second)
    assert {e["pid"] for e in ready} == spares and [e["warm"] for e in ready] == [False, True]
    assert spares.isdisjoint(e["pid"] for e in ready_events(farm, first))  # a job never gets another's process


def test_killing_warm_blender_mid_chunk_loses_only_the_current_frame(farm, slow_blend):
    farm.start_worker("w")
    job_id = submit(farm.url, slow_blend, name="killwarm", frame_start=1, frame_end=8, chunk_size=4).json()["job"]["id"]
    # let chunk 0 finish and chunk 1 store a frame in the same (warm) process, then kill that process
    wait_until(
        lambda: len([f for f in api(farm, f"/jobs/{job_id}/frames")["frames"] if f["status"] == "DONE"]) >= 5,
        timeout=120,
        what="five stored frames",
    )
    pids = blender_pids(farm.url, job_id)
    assert len(pids) == 1, pids  # one process served both chunks
    subprocess.run(["kill", f"-{signal.SIGKILL}", str(pids.pop())], check=True)
    job = wait_for_status(farm.url, job_id, {"COMPLETED", "FAILED"}, timeout=240)
    assert job["status"] == "COMPLETED", job
    events = api(farm, f"/jobs/{job_id}/events")["events"]
    rendered = Counter(int(e["subject"].split("/")[1]) for e in events if e["kind"] == "frame")
    assert sorted(rendered) == list(range(1, 9)) and set(rendered.values()) == {1}  # nothing stored twice
    failed = [e for e in events if e["kind"] == "chunk" and e["to"] == "FAILED"]
    assert len(failed) == 1 and "signal 9" in failed[0]["reason"]
    done_before = {
        int(e["subject"].split("/")[1]) for e in events if e["kind"] == "frame" and e["at"] < failed[0]["at"]
    }
    retry = api(farm, f"/jobs/{job_id}/chunks")["chunks"][1]
    assert retry["attempts"] == 2
    # the fresh process of the retry rendered exactly the frames the killed one had not stored
    log = HTTP.get(retry["log_url"], timeout=10).text
    events = farm_events(log)
    assert {e["frame"] for e in events if e["event"] == "frame"} == set(range(5, 9)) - done_before
