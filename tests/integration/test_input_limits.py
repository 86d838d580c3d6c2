"""Input that once answered 500 (or gunicorn's HTML) now answers the contract's JSON 4xx naming the field: numbers
of thousands of digits, control characters in any text, over-long URLs; the limits on what one submission may ask of
the farm, in its form or in its scene; and the 503 `busy` of a web process already running as many Blender probes as
it may. The same through a live `farm web` process: tests/e2e/test_input_limits_live.py."""

from __future__ import annotations

import contextlib
import io

import pytest

from farm.jobs.probe_slots import PROBE_SLOTS, RETRY_AFTER_SECONDS
from tests.helpers import build_blend
from tests.integration.test_api_jobs import assert_error, post
from tests.integration.test_pages import csrf_token
from tests.rows import make_job


def csrf(client) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"X-CSRF-Token": csrf_token(client)}


HUGE = "9" * 5000  # past Python's 4,300-digit limit on int("...")
LONG = "9" * 4000  # as long as a number in a URL may be


@pytest.mark.parametrize(
    ("field", "raw", "code"),
    [
        ("frame_start", HUGE, "too_large"),
        ("frame_end", "-" + HUGE, "negative"),
        ("samples", HUGE, "too_large"),
        ("chunk_size", "0" * 5000 + "2x", "not_an_integer"),
        ("priority", "²", "not_an_integer"),
    ],
)
def test_huge_or_odd_numbers_in_the_form_name_their_field(client, field, raw, code):
    error = assert_error(post(client, {field: raw}), 400, code, field)
    assert len(error["message"]) < 200  # the number is not echoed back in full


def test_leading_zeros_do_not_make_a_number_too_large(client):
    assert_error(post(client, {"frame_start": "0" * 5000 + "7"}), 400, "missing", "file")  # the number was fine


@pytest.mark.parametrize(
    "path",
    [
        "/api/jobs?offset=%C2%B2",  # '²': a digit to str.isdigit(), not to int()
        "/api/tasks?limit=%D9%A3",  # '٣', an Arabic-Indic three
        f"/api/tasks?offset={LONG}",
    ],
)
def test_odd_or_long_query_numbers_are_400(client, path):
    field = path.split("?")[1].split("=")[0]
    assert_error(client.get(path), 400, "out_of_range", field)


def test_a_query_number_too_long_for_python_is_a_414(client):
    assert_error(client.get(f"/api/jobs?limit={HUGE}"), 414, "uri_too_long", None)


def test_numbers_in_a_jobs_events_query_and_path(client, database):
    job_id = make_job(database, 2, 1)
    assert_error(client.get(f"/api/jobs/{job_id}/events?after={LONG}"), 400, "out_of_range", "after")
    for path in (f"frames/{LONG}", f"frames/{LONG}/thumbnail", f"chunks/{LONG}/log", "frames/99999999999"):
        assert_error(client.get(f"/api/jobs/{job_id}/{path}"), 404, "not_found", None)
    assert_error(client.get(f"/api/jobs/{job_id}/frames/4000000000"), 404, "not_found", None)  # past int4


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/jobs?q=%00abc", "q"),
        ("/api/jobs?status=%00", "status"),
        ("/api/tasks?worker=w%00", "worker"),
        ("/api/tasks?job=%1b", "job"),
        ("/api/jobs/%00", "job_id"),
        ("/api/jobs/ab%00cd/frames", "job_id"),
        ("/api/workers/a%00b/events", "hostname"),
        ("/api/jobs?x%00=1", "x\x00"),
    ],
)
def test_control_characters_in_the_url_are_400_naming_the_field(client, path, field):
    assert_error(client.get(path), 400, "bad_characters", field)


def test_control_characters_on_a_page_are_a_400_page(client):
    response = client.get("/?q=%00")
    assert response.status_code == 400 and "control characters" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("data", "filename", "field"),
    [
        ({"main": "a\x00.blend"}, "scene.blend", "main"),
        ({"name": "tab\there"}, "scene.blend", "name"),
        ({}, "bad\x00name.blend", "file"),  # the file's stem would be the job's name
        ({}, "esc\x1b[2J.blend", "file"),
    ],
)
def test_control_characters_in_the_form_are_400_naming_the_field(client, blend_bytes, data, filename, field):
    assert_error(post(client, data, blend_bytes, filename=filename), 400, "bad_characters", field)


def test_a_long_url_is_414_json(client):
    error = assert_error(client.get("/api/jobs?q=" + "a" * 5000), 414, "uri_too_long", None)
    assert "4096" in error["message"]
    assert client.get("/api/jobs?q=" + "a" * 3000).status_code == 200


@pytest.fixture(scope="module")
def huge_blend(prod_settings, tmp_path_factory):  # type: ignore[no-untyped-def]
    return build_blend(prod_settings, "huge", tmp_path_factory.mktemp("huge") / "huge.blend").read_bytes()


ONE_FRAME = {"frame_start": "1", "frame_end": "1", "chunk_size": "1"}  # no probe frame is rendered


@pytest.mark.parametrize(
    ("data", "code", "field"),
    [
        ({"samples": "16777216", "resolution_x": "16384", "resolution_y": "16384"}, "too_large", "samples"),
        ({"samples": "16385"}, "too_large", "samples"),
        (
            {"resolution_x": "16384", "resolution_y": "16384", "resolution_percentage": "62"},
            "too_many_pixels",
            "resolution_x",
        ),
        (
            {"resolution_y": "12000", "resolution_x": "9000", "resolution_percentage": "100"},
            "too_many_pixels",
            "resolution_x",
        ),
        ({"frame_end": "10001"}, "too_many_chunks", "chunk_size"),
    ],
)
def test_a_form_asking_too_much_is_refused_naming_the_field(client, blend_bytes, data, code, field):
    assert_error(post(client, {**ONE_FRAME, **data}, blend_bytes), 400, code, field)


def test_the_percentage_counts_on_both_sides(client, blend_bytes):
    """16384² at 61% is 9994², 99.9 megapixels: under the 100 allowed; at 62% it was refused above."""
    response = post(
        client,
        {**ONE_FRAME, "resolution_x": "16384", "resolution_y": "16384", "resolution_percentage": "61"},
        blend_bytes,
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    client.post(f"/api/jobs/{response.get_json()['job']['id']}/cancel")


@pytest.mark.parametrize(
    ("data", "code", "field", "words"),
    [
        ({**ONE_FRAME, "resolution_percentage": "10"}, "too_large", "samples", "the scene's own samples (16777216)"),
        ({**ONE_FRAME, "samples": "4"}, "too_many_pixels", "resolution_percentage", "16384×16384 at 100%"),
        (
            {"chunk_size": "1", "samples": "4", "resolution_percentage": "10"},
            "too_many_frames",
            "frame_start",
            "1048574 frames",
        ),
        # no chunk size: the probe would time a frame, but renders none past the limits
        ({"frame_start": "1", "frame_end": "1"}, "too_large", "samples", "the scene's own samples (16777216)"),
    ],
)
def test_the_scenes_own_settings_are_held_to_the_same_limits(client, huge_blend, data, code, field, words):
    error = assert_error(post(client, data, huge_blend), 400, code, field)
    assert words in error["message"]


def test_past_max_probes_a_submission_is_503_busy_with_retry_after(client, app, blend_bytes):
    """The slots are held by the test through the code each probe runs; the answer is the real HTTP one."""
    limit = app.extensions["farm"].max_probes
    with contextlib.ExitStack() as held:
        for _ in range(limit):
            held.enter_context(PROBE_SLOTS.hold(limit))
        response = post(client, ONE_FRAME, blend_bytes)
        assert_error(response, 503, "busy", None)
        assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
        page = client.post(
            "/jobs/new/upload", data={"file": (io.BytesIO(blend_bytes), "s.blend")}, headers=csrf(client)
        )
        assert page.status_code == 503 and page.get_json()["error"]["code"] == "busy"
        assert page.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    response = post(client, ONE_FRAME, blend_bytes)  # the slots are free again
    assert response.status_code == 201, response.get_data(as_text=True)
    client.post(f"/api/jobs/{response.get_json()['job']['id']}/cancel")
