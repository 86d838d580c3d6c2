"""Input that once answered 500 (or gunicorn's HTML) now answers the contract's JSON 4xx naming the field: numbers
of thousands of digits, control characters in any text, over-long URLs (in-process and through a live `farm web`);
and the limits on what one submission may ask of the farm."""

from __future__ import annotations

import pytest
import requests

from tests.rows import make_job
from tests.test_api_jobs import assert_error, post

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


@pytest.mark.slow
@pytest.mark.parametrize("length", [6000, 20000])
def test_a_long_url_is_414_json_from_farm_web(farm, length):
    """6,000 bytes reaches the app (gunicorn's default would refuse it with HTML); 20,000 is past what gunicorn reads
    at all, and its own refusal is the contract's JSON too."""
    response = requests.get(f"{farm.url}/api/jobs?q={'a' * length}", timeout=10)
    assert response.status_code == 414, response.text[:300]
    assert response.headers["Content-Type"].startswith("application/json"), response.text[:300]
    assert response.json()["error"]["code"] == "uri_too_long"


@pytest.mark.slow
def test_what_gunicorn_refuses_itself_is_json(farm):
    response = requests.get(f"{farm.url}/api/health", headers={"X-Big": "a" * 10000}, timeout=10)
    assert response.status_code == 431, response.text[:300]
    assert response.json()["error"]["code"] == "request_header_fields_too_large"
    assert "<html" not in response.text


@pytest.fixture(scope="module")
def blend_bytes(tiny_blend):
    return tiny_blend.read_bytes()
