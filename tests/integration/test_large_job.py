"""A large job (200,000 frames, the most CI time allows; bench/million.py submits a million) through the Flask test
client on the real Postgres, Blender probing the file: it is accepted with a row for every frame, made by the
database, and its JOB, pages and frames answer what they should without reading every frame."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from farm.models import Chunk, Frame
from tests.integration.test_api_jobs import assert_error, post
from webapp.api.jobs import FRAMES_PAGE
from webapp.pages import FIRST_TILES

FRAMES = 200_000
CHUNK = 100


def test_a_200000_frame_job_is_accepted_and_answers_in_pages(client, database, blend_bytes):
    response = post(
        client, {"name": "large", "frame_start": "1", "frame_end": str(FRAMES), "chunk_size": str(CHUNK)}, blend_bytes
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    job = response.get_json()["job"]
    render = job["render"]
    assert (render["frame_start"], render["frame_end"], render["frames_to_render"]) == (1, FRAMES, FRAMES)
    assert (render["frames_rendered"], render["progress"], render["chunks_rendering"]) == (0, 0.0, 0)
    assert job["settings"]["chunk_size"] == CHUNK and job["status"] == "QUEUED"

    with database.session() as session:  # one row per frame, each in the chunk whose range holds it
        per_chunk = session.execute(
            select(
                Chunk.frame_start, Chunk.frame_end, func.count(Frame.id), func.min(Frame.frame), func.max(Frame.frame)
            )
            .join(Frame, Frame.chunk_id == Chunk.id)
            .where(Chunk.job_id == job["id"])
            .group_by(Chunk.id)
        ).all()
        statuses = session.execute(
            select(Frame.status, func.count()).where(Frame.job_id == job["id"]).group_by(Frame.status)
        ).all()
    assert len(per_chunk) == FRAMES // CHUNK
    assert all(count == CHUNK and (lo, hi) == (start, end) for start, end, count, lo, hi in per_chunk)
    assert statuses == [("QUEUED", FRAMES)]

    assert client.get(f"/api/jobs/{job['id']}").get_json()["job"]["render"] == render
    listed = client.get("/api/jobs").get_json()["jobs"]
    assert listed[0]["id"] == job["id"] and listed[0]["render"]["frames_to_render"] == FRAMES

    first = client.get(f"/api/jobs/{job['id']}/frames").get_json()  # the default page: as many as a small job has
    assert (first["total"], first["limit"], first["offset"]) == (FRAMES, FRAMES_PAGE, 0)
    assert [f["frame"] for f in first["frames"]] == list(range(1, FRAMES_PAGE + 1))
    assert {f["status"] for f in first["frames"]} == {"QUEUED"} and first["frames"][0]["url"] is None
    last = client.get(f"/api/jobs/{job['id']}/frames?offset={FRAMES - 10}&limit=50").get_json()
    assert [f["frame"] for f in last["frames"]] == list(range(FRAMES - 9, FRAMES + 1))
    assert client.get(f"/api/jobs/{job['id']}/frames?offset={FRAMES}").get_json()["frames"] == []
    assert_error(client.get(f"/api/jobs/{job['id']}/frames?limit={FRAMES_PAGE + 1}"), 400, "out_of_range", "limit")
    assert_error(client.get(f"/api/jobs/{job['id']}/frames?offset=-1"), 400, "out_of_range", "offset")

    page = client.get(f"/jobs/{job['id']}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert re.search(rf'id="frames-done">0</span> / {FRAMES}<', html)
    assert len(re.findall(r'class="tile queued"', html)) == FIRST_TILES  # a window, never 200,000 tiles
    assert "The grid and the chart show the first 5,000 frames" in html
    jobs_page = client.get("/").get_data(as_text=True)
    assert f"/jobs/{job['id']}" in jobs_page

    assert client.post(f"/api/jobs/{job['id']}/cancel").status_code == 202
