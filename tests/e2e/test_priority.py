"""Priority orders work on the real Redis with a real worker: a priority-9 job submitted behind a long priority-0
job is rendered before the rest of it (Redis priority queues; the farm's 9 is kombu's step 0)."""

import uuid

from tests.helpers import HTTP, FarmProcesses, submit, wait_for_status, wait_until


def chunks(farm: FarmProcesses, job_id: str) -> list[dict]:
    return HTTP.get(f"{farm.url}/api/jobs/{job_id}/chunks", timeout=10).json()["chunks"]


def test_priority_9_overtakes_a_long_priority_0_job(prod_env, database, tiny_blend, slow_blend, tmp_path):
    farm = FarmProcesses(dict(prod_env, FARM_QUEUE=f"{prod_env['FARM_QUEUE']}-pri-{uuid.uuid4().hex[:6]}"), tmp_path)
    try:
        farm.start_web()
        farm.start_worker("pri")
        low = submit(farm.url, slow_blend, name="low", frame_start=1, frame_end=8, chunk_size=1, priority=0)
        low_id = low.json()["job"]["id"]
        wait_until(
            lambda: any(c["status"] == "RENDERING" for c in chunks(farm, low_id)), timeout=60, what="low to start"
        )
        high = submit(farm.url, tiny_blend, name="high", frame_start=1, frame_end=2, chunk_size=1, priority=9)
        high_id = high.json()["job"]["id"]
        assert wait_for_status(farm.url, high_id, {"COMPLETED", "FAILED"}, timeout=120)["status"] == "COMPLETED"
        assert wait_for_status(farm.url, low_id, {"COMPLETED", "FAILED"}, timeout=240)["status"] == "COMPLETED"
        started = sorted(
            [(c["started_at"], "high", c["index"]) for c in chunks(farm, high_id)]
            + [(c["started_at"], "low", c["index"]) for c in chunks(farm, low_id)]
        )
    finally:
        farm.stop_all()
    order = [f"{job}{index}" for _, job, index in started]
    # low0 was rendering when high arrived; at most the one message the worker had already taken may come between
    assert order.index("high1") <= 3, order
    assert order[-1] == "low7" and order.index("high1") < order.index("low3"), order
