"""`split` on POST /api/jobs through the Flask test client, Blender probing each file: refused with 422 naming
`split` unless it is a whole number of parts from 2 to 64, for a one-frame range, without `preview`, and with a
sample (Cycles) for every part; accepted, a split still is one frame and one chunk per part, and JOB `split` says
how many (1 for every other job)."""

import io
import re

import pytest

from tests.helpers import csrf_in
from tests.integration.test_api_jobs import assert_error, post


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"split": "1", "frame_start": "1", "frame_end": "1"}, "too_small"),
        ({"split": "65", "frame_start": "1", "frame_end": "1"}, "too_large"),
        ({"split": "two", "frame_start": "1", "frame_end": "1"}, "not_an_integer"),
        ({"split": "2.5", "frame_start": "1", "frame_end": "1"}, "not_an_integer"),
        ({"split": "2", "frame_start": "1", "frame_end": "3"}, "not_a_still"),
        ({"split": "2", "frame_start": "1", "frame_end": "1", "preview": "1"}, "split_with_preview"),
    ],
)
def test_bad_split_is_refused_before_blender_runs(client, blend_bytes, data, code):
    error = assert_error(post(client, data, blend_bytes), 422, code, "split")
    assert "split" in error["message"]


def test_a_split_of_the_scenes_whole_range_is_refused(client, blend_bytes):
    assert_error(post(client, {"split": "2"}, blend_bytes), 422, "not_a_still", "split")  # the scene's 1-6


def test_a_cycles_still_needs_a_sample_for_every_part(client, blend_bytes):
    refused = post(client, {"split": "8", "frame_start": "2", "frame_end": "2"}, blend_bytes)  # the scene's 4 samples
    assert "at least 8 samples" in assert_error(refused, 422, "too_many_parts", "split")["message"]
    accepted = post(client, {"split": "8", "frame_start": "2", "frame_end": "2", "samples": "8"}, blend_bytes)
    assert accepted.status_code == 201, accepted.get_data(as_text=True)
    client.post(f"/api/jobs/{accepted.get_json()['job']['id']}/cancel")


def test_a_split_still_is_one_frame_in_one_chunk_per_part(client, blend_bytes):
    response = post(client, {"split": "3", "frame_start": "4", "frame_end": "4", "name": "still"}, blend_bytes)
    assert response.status_code == 201, response.get_data(as_text=True)
    job = response.get_json()["job"]
    assert job["split"] == 3 and job["status"] == "QUEUED"
    assert job["render"]["frames_to_render"] == 1 and job["render"]["frames_rendered"] == 0  # no probe frame kept
    chunks = client.get(f"/api/jobs/{job['id']}/chunks").get_json()["chunks"]
    assert [(c["index"], c["frame_start"], c["frame_end"]) for c in chunks] == [(0, 4, 4), (1, 4, 4), (2, 4, 4)]
    frames = client.get(f"/api/jobs/{job['id']}/frames").get_json()["frames"]
    assert [(f["frame"], f["status"]) for f in frames] == [(4, "QUEUED")]
    assert client.get(f"/api/jobs/{job['id']}").get_json()["job"]["split"] == 3
    client.post(f"/api/jobs/{job['id']}/cancel")

    plain = post(client, {"frame_start": "1", "frame_end": "2", "chunk_size": "1"}, blend_bytes).get_json()["job"]
    assert plain["split"] == 1
    client.post(f"/api/jobs/{plain['id']}/cancel")


def test_the_new_job_form_asks_for_split_and_shows_its_error_beside_it(client, blend_bytes):
    page = client.get("/jobs/new").get_data(as_text=True)
    assert 'name="split" type="number"' in page and 'min="2" max="64"' in page
    form = {"csrf_token": csrf_in(page), "file": (io.BytesIO(blend_bytes), "scene.blend")}
    sent = client.post("/jobs/new", data={**form, "split": "2", "frame_start": "1", "frame_end": "2"})
    answer = sent.get_data(as_text=True)
    assert sent.status_code == 422, answer[:2000]
    field = re.search(r'data-field="split">.*?</div>', answer, re.S).group(0)
    assert "split renders one still" in field and 'aria-invalid="true"' in field and 'value="2"' in field
