"""Safe deployment in the app: no default secret key on a shared database, presigned URLs short-lived and signed for
the address browsers reach (and never in a JOB), security headers and cookie flags on every response."""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, urlparse

import pytest
from flask import Flask

from farm.config import Settings, load_settings, secret_key_problem
from farm.jobs import states
from farm.models import JobStatus
from farm.storage import open_storage
from tests.helpers import HTTP, signed_in
from tests.rows import add_job

PLACEHOLDERS = [
    "dev",
    "changeme",
    "secret",
    "change-me-flask-secret",  # what compose.yaml shipped
    "x" * 64,
    "please-change-me-before-production-0123456789",
    "my-production-secret-key-for-the-render-farm",
]


@pytest.mark.parametrize("key", PLACEHOLDERS)
def test_well_known_secret_keys_are_refused(key):
    assert secret_key_problem(key)


def test_a_generated_secret_key_is_accepted():
    assert secret_key_problem(secrets.token_hex(32)) is None
    assert secret_key_problem(secrets.token_urlsafe(32)) is None


def farm_web(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farm", "web", "--port", "1"],  # it must stop before it binds anything
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("key", [None, "dev", "change-me-flask-secret"])
def test_farm_web_on_a_shared_database_refuses_a_missing_or_well_known_secret_key(prod_env, tmp_path, key):
    env = {k: v for k, v in prod_env.items() if k != "FARM_SECRET_KEY"}
    env.update(FARM_INSTANCE_DIR=str(tmp_path), FARM_SECRET_KEY=key or "")
    result = farm_web(env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("farm: FARM_SECRET_KEY "), result.stderr
    assert not (tmp_path / "secret_key").exists()  # nothing generated behind the operator's back


def test_the_generated_secret_key_is_readable_by_its_owner_only(tmp_path):
    settings = load_settings({"FARM_INSTANCE_DIR": str(tmp_path)}, dotenv_path=None)
    path = tmp_path / "secret_key"
    assert path.read_text() == settings.secret_key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not settings.production and secret_key_problem(settings.secret_key) is None


@contextmanager
def web_app(settings: Settings) -> Iterator[Flask]:
    """A web app of its own (no spare Blender), its database connections closed at the end."""
    from webapp import create_app
    from webapp.extensions import db

    app = create_app(dataclasses.replace(settings, probe_spare=False), {"TESTING": True})
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture(scope="module")
def public_app(prod_settings: Settings) -> Iterator[Flask]:
    """The web app on S3 (moto) whose browsers reach the S3 server by another name than the farm does."""
    public = prod_settings.s3_endpoint_url.replace("127.0.0.1", "localhost")
    with web_app(dataclasses.replace(prod_settings, s3_public_url=public)) as app:
        yield app


@pytest.fixture()
def completed_job(public_app: Flask) -> Iterator[str]:
    from webapp.extensions import db

    storage = public_app.extensions["farm.storage"]
    with public_app.app_context():
        job_id = add_job(db.session, 2, 2, name=f"zip-{secrets.token_hex(4)}")
        db.session.commit()
        for status in (JobStatus.RENDERING, JobStatus.PACKAGING, JobStatus.UPLOADING):
            states.move_job(db.session, job_id, status)
        key = f"jobs/{job_id}/out.zip"
        storage.put_bytes(key, b"the zip")
        states.complete_job(db.session, job_id, asset_key=key, asset_filename="out.zip", asset_size=7, actor="test")
        db.session.commit()
    yield job_id


def test_a_jobs_asset_url_is_the_apis_own_and_redirects_to_a_short_presigned_url_for_the_public_host(
    public_app, completed_job, prod_settings, admin_token
):
    client = signed_in(public_app.test_client(), admin_token)
    listed = client.get("/api/jobs?limit=500")
    assert b"X-Amz-Signature" not in listed.data and b"Signature=" not in listed.data
    job = next(j for j in listed.get_json()["jobs"] if j["id"] == completed_job)
    assert job["asset"]["url"] == f"http://localhost/api/jobs/{completed_job}/asset"
    one = client.get(f"/api/jobs/{completed_job}")
    assert b"X-Amz-Signature" not in one.data and one.get_json()["job"]["asset"] == job["asset"]

    redirect = client.get(f"/api/jobs/{completed_job}/asset")
    assert redirect.status_code == 302
    location = urlparse(redirect.headers["Location"])
    public = urlparse(prod_settings.s3_endpoint_url.replace("127.0.0.1", "localhost"))
    assert location.netloc == public.netloc  # signed for the host browsers reach, not the farm's own
    query = parse_qs(location.query)
    assert "X-Amz-Signature" in query and int(query["X-Amz-Expires"][0]) <= 3600
    assert HTTP.get(redirect.headers["Location"], timeout=10).content == b"the zip"


def test_presigned_urls_last_as_long_as_configured(prod_env, tmp_path):
    env = dict(prod_env, FARM_INSTANCE_DIR=str(tmp_path), FARM_PRESIGN_SECONDS="600")
    url = open_storage(load_settings(env, dotenv_path=None)).download_url("jobs/x/out.zip", "out.zip")
    assert parse_qs(urlparse(url).query)["X-Amz-Expires"] == ["600"]
    default = open_storage(load_settings(prod_env, dotenv_path=None)).download_url("jobs/x/out.zip")
    assert parse_qs(urlparse(default).query)["X-Amz-Expires"] == ["3600"]


def policy(response) -> dict[str, str]:  # type: ignore[no-untyped-def]
    header = response.headers["Content-Security-Policy"]
    return {part.split()[0]: part for part in (p.strip() for p in header.split(";"))}


def test_every_response_carries_the_security_headers(public_app, completed_job, prod_settings, admin_token):
    client = signed_in(public_app.test_client(), admin_token)
    for path in ("/", "/jobs/new", "/workers", f"/jobs/{completed_job}", "/api/jobs", "/api/health",
                 "/api/jobs/nope", "/static/farm.js", "/no-such-page"):  # fmt: skip
        response = client.get(path, buffered=True)  # a static file's stream is read and closed
        csp = policy(response)
        assert csp["default-src"] == "default-src 'self'", path
        assert csp["frame-ancestors"] == "frame-ancestors 'none'", path
        assert csp["object-src"] == "object-src 'none'", path
        assert "unsafe-inline" not in response.headers["Content-Security-Policy"], path
        # presigned frames and thumbnails load from the S3 address browsers reach
        assert csp["img-src"] == f"img-src 'self' {prod_settings.s3_endpoint_url.replace('127.0.0.1', 'localhost')}"
        # and so does the preview movie (its link redirects there too)
        assert csp["media-src"] == f"media-src 'self' {prod_settings.s3_endpoint_url.replace('127.0.0.1', 'localhost')}"
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        assert response.headers["Referrer-Policy"] == "same-origin", path
        assert response.headers["X-Frame-Options"] == "DENY", path


def test_pages_hold_no_inline_script_or_style_but_the_nonced_one(public_app, completed_job, admin_token):
    client = signed_in(public_app.test_client(), admin_token)
    for path in ("/", "/jobs/new", "/workers", f"/jobs/{completed_job}", "/?partial=1", "/workers?partial=1"):
        response = client.get(path)
        html = response.get_data(as_text=True)
        assert response.status_code == 200, path
        assert " style=" not in html, path  # a style attribute is an inline style: the policy refuses it
        scripts = re.findall(r"<script\b([^>]*)>", html)
        assert all("src=" in attrs or 'type="application/json"' in attrs for attrs in scripts), (path, scripts)
        nonces = re.findall(r'<style nonce="([^"]+)">', html)
        assert html.count("<style") == len(nonces), path
        style_src = policy(response)["style-src"]
        assert style_src == " ".join(["style-src 'self'", *(f"'nonce-{n}'" for n in nonces)]), path
    job_page = client.get(f"/jobs/{completed_job}").get_data(as_text=True)
    assert "--ratio: 64 / 36" in job_page  # the job's proportions still arrive before the first paint


def test_the_session_cookie_is_same_site_lax_and_secure_behind_https(
    public_app, completed_job, prod_settings, admin_token
):
    cookie = signed_in(public_app.test_client(), admin_token).get("/jobs/new").headers["Set-Cookie"]
    assert "SameSite=Lax" in cookie and "Secure" not in cookie and "HttpOnly" in cookie
    with web_app(dataclasses.replace(prod_settings, https=True)) as behind_tls:
        client = signed_in(behind_tls.test_client(), admin_token)
        response = client.get("/jobs/new", headers={"X-Forwarded-Proto": "https"})
        job = client.get(f"/api/jobs/{completed_job}", headers={"X-Forwarded-Proto": "https"}).get_json()["job"]
    assert "Secure" in response.headers["Set-Cookie"] and "SameSite=Lax" in response.headers["Set-Cookie"]
    assert job["asset"]["url"].startswith("https://")  # the links the API builds follow the proxy's scheme
