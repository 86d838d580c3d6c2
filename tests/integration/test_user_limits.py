"""Per-user limits and request rates on the real Postgres, Redis and S3, through the web app in-process: a
submission past FARM_USER_MAX_ACTIVE_JOBS or FARM_USER_MAX_QUEUED_FRAMES is refused with 429 naming the setting, a
submission flood and a login flood are answered 429 `rate_limited`, and each user counts apart.

Users are told apart by their address until tokens land (the job's owner is `anonymous@<address>`). The jobs go to
a queue of this module's own that no worker reads, so they stay QUEUED: under way, frames waiting."""

from __future__ import annotations

import dataclasses
import io
import uuid

import pytest

from tests.helpers import csrf_in, make_user

ONE_JOB = {"chunk_size": "2", "samples": "1"}


@pytest.fixture(scope="module")
def limited_app(prod_settings, shared_database):  # type: ignore[no-untyped-def]
    from webapp import create_app
    from webapp.extensions import db

    settings = dataclasses.replace(
        prod_settings,
        queue=f"{prod_settings.queue}-limits-{uuid.uuid4().hex[:6]}",
        user_max_active_jobs=2,
        user_max_queued_frames=10,
        submit_limit="5 per minute",
        login_limit="3 per minute",
    )
    app = create_app(settings, {"TESTING": True})
    yield app
    with app.app_context():
        db.engine.dispose()


def as_user(app, address: str):  # type: ignore[no-untyped-def]
    """A test client of a new artist (its Bearer token) calling from `address`; `.name` is the user's."""
    name, token = make_user(app.extensions["farm"], "artist")
    client = app.test_client()
    client.environ_base |= {"REMOTE_ADDR": address, "HTTP_AUTHORIZATION": f"Bearer {token}"}
    client.name = name
    return client


def submit(client, blend: bytes, frames: tuple[int, int]):  # type: ignore[no-untyped-def]
    data = {**ONE_JOB, "frame_start": str(frames[0]), "frame_end": str(frames[1])}
    return client.post("/api/jobs", data={**data, "file": (io.BytesIO(blend), "tiny.blend")})


def refused(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code, error
    return error


def test_a_user_past_max_active_jobs_is_refused_until_one_ends(limited_app, blend_bytes):
    ann, bob = as_user(limited_app, "127.0.1.1"), as_user(limited_app, "127.0.1.2")
    first = submit(ann, blend_bytes, (1, 2))
    assert first.status_code == 201, first.get_data(as_text=True)
    assert first.get_json()["job"]["owner"] == ann.name
    assert submit(ann, blend_bytes, (1, 2)).status_code == 201
    error = refused(submit(ann, blend_bytes, (1, 2)), 429, "too_many_active_jobs")
    assert "FARM_USER_MAX_ACTIVE_JOBS" in error["message"] and error["limit"] == 2 and error["field"] is None
    assert submit(bob, blend_bytes, (1, 2)).status_code == 201  # another user's jobs count apart
    assert ann.post(f"/api/jobs/{first.get_json()['job']['id']}/cancel").get_json()["job"]["status"] == "CANCELED"
    assert submit(ann, blend_bytes, (1, 2)).status_code == 201  # an ended job frees its place


def test_a_user_past_max_queued_frames_is_refused_naming_the_limit(limited_app, blend_bytes):
    cid = as_user(limited_app, "127.0.1.3")
    assert submit(cid, blend_bytes, (1, 6)).status_code == 201
    error = refused(submit(cid, blend_bytes, (1, 5)), 429, "too_many_queued_frames")
    assert "FARM_USER_MAX_QUEUED_FRAMES" in error["message"] and "would be 11" in error["message"]
    assert submit(cid, blend_bytes, (1, 4)).status_code == 201  # exactly the limit: 10 frames waiting


def test_a_submission_flood_is_answered_429_per_user(limited_app):
    dan, eve = as_user(limited_app, "127.0.1.4"), as_user(limited_app, "127.0.1.5")
    for _ in range(5):  # refused for their content (no file), but each one counts
        refused(dan.post("/api/jobs", data={"frame_start": "1"}), 400, "missing")
    flood = dan.post("/api/jobs", data={"frame_start": "1"})
    error = refused(flood, 429, "rate_limited")
    assert "5 per 1 minute" in error["message"] and int(flood.headers["Retry-After"]) > 0
    token = csrf_in(dan.get("/jobs/new").get_data(as_text=True))
    page = dan.post("/jobs/new", data={"frame_start": "1", "csrf_token": token})  # the New job page: the same limit
    assert page.status_code == 429 and "Too many requests" in page.get_data(as_text=True)
    refused(eve.post("/api/jobs", data={"frame_start": "1"}), 400, "missing")  # not eve's flood


def test_brute_force_login_is_answered_429_per_address(limited_app):
    fay, gus = (limited_app.test_client() for _ in range(2))
    fay.environ_base["REMOTE_ADDR"], gus.environ_base["REMOTE_ADDR"] = "127.0.1.6", "127.0.1.7"
    assert [fay.get("/login").status_code for _ in range(5)] == [200] * 5  # showing the form is no attempt
    wrong = {"username": "nobody", "password": "guess", "csrf_token": csrf_in(fay.get("/login").get_data(as_text=True))}
    assert [fay.post("/login", data=wrong).status_code for _ in range(3)] == [401] * 3
    page = fay.post("/login", data=wrong)  # a page: the farm's error page, not JSON
    assert page.status_code == 429 and "3 per 1 minute" in page.get_data(as_text=True)
    assert int(page.headers["Retry-After"]) > 0
    token = csrf_in(gus.get("/login").get_data(as_text=True))
    assert gus.post("/login", data=dict(wrong, csrf_token=token)).status_code == 401  # another address counts apart
