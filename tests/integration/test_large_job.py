"""A large job (200,000 frames, the most CI time allows; bench/million.py submits a million) through the Flask test
client on the real Postgres, Blender probing the file: it is accepted with its chunk rows only (a chunk's frame rows
are made when a worker claims it), and its JOB, pages and frames answer what they should without reading every
frame, rows or none."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from farm.jobs import states
from farm.models import Chunk, ChunkStatus, Frame
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

    with database.session() as session:  # its chunks, each with its range and task; not one frame row yet
        chunks = session.execute(
            select(Chunk.index, Chunk.frame_start, Chunk.frame_end, Chunk.task_id).where(Chunk.job_id == job["id"])
        ).all()
        assert session.scalar(select(func.count()).select_from(Frame).where(Frame.job_id == job["id"])) == 0
    assert len(chunks) == FRAMES // CHUNK and all(t for *_, t in chunks)
    assert sorted((s, e) for _, s, e, _ in chunks) == [(i * CHUNK + 1, (i + 1) * CHUNK) for i in range(FRAMES // CHUNK)]

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


def frame_page(client, job_id, offset, limit):
    return client.get(f"/api/jobs/{job_id}/frames?offset={offset}&limit={limit}").get_json()["frames"]


def test_frames_of_unclaimed_chunks_read_as_queued_through_cancel_and_retry(client, database, blend_bytes):
    """A page over claimed and never-claimed chunks: rows where a claim made them, QUEUED where none did; a cancel
    and a retry move what exists, and the next claims render exactly the frames not DONE."""
    response = post(client, {"name": "gaps", "frame_start": "1", "frame_end": "1000", "chunk_size": "10"}, blend_bytes)
    assert response.status_code == 201, response.get_data(as_text=True)
    job_id = response.get_json()["job"]["id"]
    with database.session() as session:
        ids = dict(session.execute(select(Chunk.index, Chunk.id).where(Chunk.job_id == job_id)).all())
        claim = states.claim_chunk(session, ids[50], "w1@gaps", None)  # frames 501-510, in the middle
        assert claim is not None and claim.frames == list(range(501, 511))
        for frame in (501, 502):
            assert states.frame_done(
                session, job_id, frame, worker="w1@gaps", render_time_ms=7.0, device="CPU", image_key=f"k/{frame}",
                sha256="a" * 64, size=1, attempt=1,
            )  # fmt: skip
    page = frame_page(client, job_id, 495, 20)  # frames 496-515: chunk 49 unclaimed, 50 claimed, 51 unclaimed
    assert [f["frame"] for f in page] == list(range(496, 516))
    statuses = {f["frame"]: f["status"] for f in page}
    assert {statuses[n] for n in range(496, 501)} == {"QUEUED"} == {statuses[n] for n in range(511, 516)}
    assert (statuses[501], statuses[502]) == ("DONE", "DONE")
    assert {statuses[n] for n in range(503, 511)} == {"RENDERING"}
    done = page[5]
    assert done["worker"] == "w1@gaps" and done["render_time"] == 7.0 and done["url"].endswith(f"/{job_id}/frames/501")
    assert page[0] == {
        "frame": 496, "status": "QUEUED", "render_time": None, "worker": None, "device": None, "sha256": None,
        "url": None,
    }  # fmt: skip
    assert_error(client.get(f"/api/jobs/{job_id}/frames/900"), 409, "wrong_state", None)  # in range, not rendered
    assert client.get(f"/api/jobs/{job_id}/frames/1001").status_code == 404

    assert client.post(f"/api/jobs/{job_id}/cancel").status_code == 202  # one chunk renders: CANCELING
    with database.session() as session:
        chunk = session.get(Chunk, ids[50])
        states.finish_chunk(session, chunk, ChunkStatus.CANCELED, worker="w1@gaps", attempt=1)
        assert states.settle_cancel(session, job_id, actor="test")
    statuses = {f["frame"]: f["status"] for f in frame_page(client, job_id, 495, 20)}
    assert {statuses[n] for n in range(503, 511)} == {"QUEUED"} and statuses[501] == "DONE"
    with database.session() as session:  # the cancel moved no row it did not have to: none were made
        assert session.scalar(select(func.count()).select_from(Frame).where(Frame.job_id == job_id)) == 10

    assert client.post(f"/api/jobs/{job_id}/retry").status_code == 202
    with database.session() as session:
        again = states.claim_chunk(session, ids[50], "w2@gaps", None)
        assert again is not None and again.frames == list(range(503, 511))  # the DONE ones are not rendered again
        later = states.claim_chunk(session, ids[99], "w2@gaps", None)
        assert later is not None and later.frames == list(range(991, 1001))
    assert client.get(f"/api/jobs/{job_id}").get_json()["job"]["render"]["frames_rendered"] == 2
