"""Simulation scenes, rendered by the farm exactly as plain Blender plays them. A chunk that starts mid-range steps
an unbaked simulation through the frames before it (one-shot: a fresh Blender per chunk, the hard case; warm: the
job's Blender), and a Mantaflow domain whose cache is absent is judged by its events, not by the abort that ends
its process (bpy 4.5 aborts in Mantaflow's teardown, and on every frame after the cache's first: see README)."""

import pytest

from tests.helpers import HTTP, build_blend, farm_frames, plain_blender_frames, submit, wait_for_status

SWEEP = [
    ("rigid_body", "0"),
    ("rigid_body_baked", "0"),
    ("cloth", "0"),
    ("particles", "0"),
    ("gn_sim", "0"),
    ("gn_sim_baked", "0"),
    ("rigid_body", "1"),
    ("gn_sim", "1"),
]


@pytest.mark.parametrize(("kind", "warm"), SWEEP)
def test_a_simulation_renders_as_plain_blender_plays_it(own_farm, prod_settings, tmp_path, kind, warm):
    blend = build_blend(prod_settings, kind, tmp_path / kind / "scene.blend")
    own_farm.start_worker("w", {"FARM_WARM_BLENDER": warm})
    # Chunks of 2 from frame 1: the second chunk starts at frame 3, two steps into the simulation.
    job_id = submit(own_farm.url, blend, name=kind, frame_start=1, frame_end=4, chunk_size=2).json()["job"]["id"]
    job = wait_for_status(own_farm.url, job_id, {"COMPLETED", "FAILED"}, timeout=180)
    assert job["status"] == "COMPLETED", job
    plain = plain_blender_frames(prod_settings, blend, tmp_path / "plain", 1, 4)
    assert len({image for _, _, image in plain.values()}) > 1  # the scene moves: the comparison can tell frames apart
    assert farm_frames(own_farm.url, job_id) == plain


@pytest.fixture(scope="module")
def smoke_blend(prod_settings, tmp_path_factory):  # type: ignore[no-untyped-def]
    return build_blend(prod_settings, "smoke", tmp_path_factory.mktemp("smoke") / "smoke.blend")


@pytest.mark.parametrize(("warm", "chunk_size"), [("1", "1"), ("0", "1"), ("1", None)])
def test_a_smoke_domain_without_its_cache_renders_its_first_frame(
    own_farm, prod_settings, smoke_blend, tmp_path, warm, chunk_size
):
    """Through the worker's warm and one-shot Blender, and through the probe (no chunk size: its frame is kept)."""
    own_farm.start_worker("w", {"FARM_WARM_BLENDER": warm})
    fields = {"frame_start": 1, "frame_end": 1, **({"chunk_size": chunk_size} if chunk_size else {})}
    response = submit(own_farm.url, smoke_blend, name="smoke", **fields)
    assert response.status_code == 201, response.text
    job_id = response.json()["job"]["id"]
    job = wait_for_status(own_farm.url, job_id, {"COMPLETED", "FAILED"}, timeout=120)
    assert job["status"] == "COMPLETED", job
    assert [w["code"] for w in job["warnings"]] == ["simulation_not_baked"]
    frames = HTTP.get(f"{own_farm.url}/api/jobs/{job_id}/frames", timeout=10).json()["frames"]
    assert [f["worker"].startswith("probe@") for f in frames] == [chunk_size is None]
    assert farm_frames(own_farm.url, job_id) == plain_blender_frames(prod_settings, smoke_blend, tmp_path, 1, 1)


def test_a_smoke_frame_that_aborts_blender_fails_with_mantaflows_words(own_farm, smoke_blend):
    """Frame 2 needs Mantaflow to step, and under bpy 4.5 it aborts there (plain Blender does the same): the chunk
    fails with the signal and Blender's words, its log keeps Mantaflow's own messages, and frame 1 is kept."""
    own_farm.start_worker("w", {"FARM_CHUNK_ATTEMPTS": "1"})
    response = submit(own_farm.url, smoke_blend, name="smoke", frame_start=1, frame_end=2, chunk_size=2)
    job_id = response.json()["job"]["id"]
    job = wait_for_status(own_farm.url, job_id, {"COMPLETED", "FAILED"}, timeout=120)
    chunks = HTTP.get(f"{own_farm.url}/api/jobs/{job_id}/chunks", timeout=10).json()["chunks"]
    assert job["status"] == "FAILED"
    assert "signal 6" in chunks[0]["error"] and "Manta" in chunks[0]["error"], chunks[0]
    log = HTTP.get(chunks[0]["log_url"], timeout=10).text
    assert "NameError" in log and "fluid" in log
    assert [f["frame"] for f in HTTP.get(f"{own_farm.url}/api/jobs/{job_id}/frames", timeout=10).json()["frames"]
            if f["status"] == "DONE"] == [1]  # fmt: skip
