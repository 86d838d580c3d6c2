"""Fair share on the real Redis and Postgres with a real worker: one user's big job, submitted first, does not keep
another user's small job waiting; a single worker renders their chunks in turn.

Each user is a real artist with a token; the worker uses the benchmark-only null renderer, since what is tested
is which chunk a task renders, not Blender."""

import pytest
import requests

from farm.config import load_settings
from tests.helpers import HTTP, FarmProcesses, make_user, wait_for_status

pytestmark = pytest.mark.slow


def user(farm: FarmProcesses) -> tuple[str, requests.Session]:
    """A new artist of the farm: their name, and a session that calls the API as them."""
    name, token = make_user(load_settings(farm.env, dotenv_path=None), "artist")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return name, session


def submit_as(http: requests.Session, farm: FarmProcesses, blend, **fields) -> dict:  # type: ignore[no-untyped-def]
    with open(blend, "rb") as fh:
        answer = http.post(
            f"{farm.url}/api/jobs",
            files={"file": (blend.name, fh)},
            data={k: str(v) for k, v in fields.items()},
            timeout=120,
        )
    assert answer.status_code == 201, answer.text
    return answer.json()["job"]


def chunks(farm: FarmProcesses, job_id: str) -> list[dict]:
    return HTTP.get(f"{farm.url}/api/jobs/{job_id}/chunks", timeout=10).json()["chunks"]


def test_a_small_job_is_rendered_in_turn_with_another_users_big_job(own_farm, tiny_blend):
    (ann, as_ann), (bob, as_bob) = user(own_farm), user(own_farm)
    big = submit_as(as_ann, own_farm, tiny_blend, name="big", frame_start=1, frame_end=24, chunk_size=1)
    small = submit_as(as_bob, own_farm, tiny_blend, name="small", frame_start=1, frame_end=3, chunk_size=1)
    assert (big["owner"], small["owner"]) == (ann, bob)
    # Every message of the big job is in the broker ahead of the small job's when the only worker starts.
    own_farm.start_worker("fair", extra_env={"FARM_RENDERER": "null-benchmark-only"})
    assert wait_for_status(own_farm.url, small["id"], {"COMPLETED", "FAILED"}, timeout=120)["status"] == "COMPLETED"
    assert wait_for_status(own_farm.url, big["id"], {"COMPLETED", "FAILED"}, timeout=120)["status"] == "COMPLETED"
    started = sorted(
        [(c["started_at"], "big", c["index"]) for c in chunks(own_farm, big["id"])]
        + [(c["started_at"], "small", c["index"]) for c in chunks(own_farm, small["id"])]
    )
    order = [job for _, job, _ in started]
    assert order[:6] == ["big", "small"] * 3, order  # in turn, the big job's first chunk first
    assert all(c["attempts"] == 1 for c in chunks(own_farm, big["id"]) + chunks(own_farm, small["id"])), started
    assert sorted(index for _, job, index in started if job == "big") == list(range(24))


def test_concurrent_claims_trade_each_chunk_once(own_farm, tiny_blend):
    """Three slots claim at once while three users' jobs wait: trades under the row locks render every chunk
    exactly once, and every job completes with all its frames."""
    jobs = [
        submit_as(user(own_farm)[1], own_farm, tiny_blend, name=f"user-{n}", frame_start=1, frame_end=n, chunk_size=1)
        for n in (20, 8, 4)
    ]
    own_farm.start_worker("fair3", extra_env={"FARM_RENDERER": "null-benchmark-only"}, concurrency=3)
    for job in jobs:
        assert wait_for_status(own_farm.url, job["id"], {"COMPLETED", "FAILED"}, timeout=180)["status"] == "COMPLETED"
        rendered = chunks(own_farm, job["id"])
        assert [c["attempts"] for c in rendered] == [1] * len(rendered), rendered
        assert all(c["status"] == "DONE" for c in rendered), rendered
