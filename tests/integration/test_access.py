"""Who may do what, over real HTTP against `farm web` (Postgres, Redis, S3 on moto): every route of the app × {no
credentials, viewer, artist on their own job, artist on someone else's job, admin, revoked token}, then the session
cookie's CSRF and cross-site defences, revocation, disabling, ownership and what is never stored or logged."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from sqlalchemy import select, text, update

from farm import users
from farm.db import Database
from farm.models import ApiToken, Event, Job, User, Worker
from tests.helpers import FarmProcesses, csrf_in, make_user
from tests.rows import add_job

NONE, VIEWER, OWN, OTHER, ADMIN, REVOKED = "none", "viewer", "artist-own", "artist-other", "admin", "revoked"
COLUMNS = (NONE, VIEWER, OWN, OTHER, ADMIN, REVOKED)
WORKER = "matrix@test"


@dataclass
class Farm:
    url: str
    database: Database
    tokens: dict[str, str]  # column → token
    names: dict[str, str]  # role → user name

    def job(self, owner: str) -> str:
        """A fresh QUEUED job owned by `owner`, written as submission leaves it (no Blender needed)."""
        with self.database.session() as session:
            job_id = add_job(session, 2, 1, name="matrix", queue=f"matrix-{uuid.uuid4().hex[:6]}")
            session.execute(update(Job).where(Job.id == job_id).values(owner=owner))
        return job_id

    def token_of(self, role: str) -> int:
        """A fresh token's id, of the user named for `role`."""
        with self.database.session() as session:
            user = users.find_user(session, self.names[role])
            return users.create_token(session, user, "matrix", actor="test").row.id


@pytest.fixture(scope="module")
def access(prod_env, prod_settings, shared_database, tmp_path_factory) -> Any:  # type: ignore[no-untyped-def]
    """`farm web` on a queue of its own, a user of each kind, a revoked token and a registered worker."""
    procs = FarmProcesses(dict(prod_env, FARM_QUEUE=f"{prod_env['FARM_QUEUE']}-access"), tmp_path_factory.mktemp("a"))
    procs.start_web()
    settings = prod_settings
    names, tokens = {}, {}
    for role in ("viewer", "artist", "admin", "other-artist", "revoked"):
        name, token = make_user(settings, "artist" if role in ("other-artist", "revoked") else role)
        names[role] = name
        tokens[role] = token
    with shared_database.session() as session:
        users.revoke(session, users.find_token(session, tokens["revoked"]), actor="test")
        session.merge(Worker(hostname=WORKER, queues=[f"matrix-{uuid.uuid4().hex[:6]}"]))
    columns = {VIEWER: tokens["viewer"], OWN: tokens["artist"], OTHER: tokens["artist"], ADMIN: tokens["admin"]}
    columns[REVOKED] = tokens["revoked"]
    yield Farm(procs.url, shared_database, columns, names), procs
    procs.stop_all()


# Expected statuses, in COLUMNS order. A route a role may use answers what the request itself deserves (200, 202,
# 303, or 400/404/409 for this test's deliberately empty or early requests): anything but 401 and 403 means the
# request got past the checks; 401 and 403 mean it did not.
SIGNED_IN_READ = (401, 200, 200, 200, 200, 401)
PAGE_READ = (302, 200, 200, 200, 200, 401)
ADMIN_ONLY = (401, 403, 403, 403, 200, 401)


@dataclass(frozen=True)
class Case:
    method: str
    rule: str  # as the app's URL map spells it, to check every route has a case
    path: str  # with {job} (a job of the column's owner), {token_b} (another user's token id)
    expect: tuple[int, ...]
    body: Callable[[], dict[str, Any]] | None = None


def blob() -> dict[str, Any]:
    data = uuid.uuid4().bytes
    return {"data": data, "path_sha": hashlib.sha256(data).hexdigest()}


CASES = [
    Case("GET", "/api/health", "/api/health", (200,) * 6),
    Case("GET", "/api/jobs", "/api/jobs", SIGNED_IN_READ),
    Case("POST", "/api/jobs", "/api/jobs", (401, 403, 400, 400, 400, 401), lambda: {"data": {"name": "x"}}),
    Case("GET", "/api/jobs/<job_id>", "/api/jobs/{job}", SIGNED_IN_READ),
    Case("DELETE", "/api/jobs/<job_id>", "/api/jobs/{job}", (401, 403, 204, 403, 204, 401)),
    Case("GET", "/api/jobs/<job_id>/asset", "/api/jobs/{job}/asset", (401, 409, 409, 409, 409, 401)),
    Case("GET", "/api/jobs/<job_id>/movie", "/api/jobs/{job}/movie", (401, 404, 404, 404, 404, 401)),  # none yet
    Case("POST", "/api/jobs/<job_id>/cancel", "/api/jobs/{job}/cancel", (401, 403, 202, 403, 202, 401)),
    Case("POST", "/api/jobs/<job_id>/retry", "/api/jobs/{job}/retry", (401, 403, 409, 403, 409, 401)),
    Case("GET", "/api/jobs/<job_id>/chunks", "/api/jobs/{job}/chunks", SIGNED_IN_READ),
    Case("GET", "/api/jobs/<job_id>/chunks/<int:index>/log", "/api/jobs/{job}/chunks/0/log", (401, *[409] * 4, 401)),
    Case("GET", "/api/jobs/<job_id>/events", "/api/jobs/{job}/events", SIGNED_IN_READ),
    Case("GET", "/api/jobs/<job_id>/frames", "/api/jobs/{job}/frames", SIGNED_IN_READ),
    Case("GET", "/api/jobs/<job_id>/frames/<int:frame>", "/api/jobs/{job}/frames/1", (401, *[409] * 4, 401)),
    Case(
        "GET",
        "/api/jobs/<job_id>/frames/<int:frame>/thumbnail",
        "/api/jobs/{job}/frames/1/thumbnail",
        (401, *[409] * 4, 401),
    ),
    Case(
        "POST", "/api/files/check", "/api/files/check", (401, 403, 200, 200, 200, 401), lambda: {"json": {"files": []}}
    ),
    Case("PUT", "/api/files/<sha256>", "/api/files/{sha}", (401, 403, 201, 201, 201, 401), blob),
    Case("GET", "/api/me", "/api/me", SIGNED_IN_READ),
    Case("GET", "/api/queues", "/api/queues", SIGNED_IN_READ),
    Case("GET", "/api/storage", "/api/storage", SIGNED_IN_READ),
    Case("GET", "/api/openapi.json", "/api/openapi.json", SIGNED_IN_READ),
    Case("GET", "/api/docs", "/api/docs", SIGNED_IN_READ),
    Case("GET", "/metrics", "/metrics", (200,) * 6),  # for Prometheus, as each worker's metrics port
    Case("GET", "/api/tasks", "/api/tasks", SIGNED_IN_READ),
    Case("GET", "/api/tokens", "/api/tokens", SIGNED_IN_READ),
    Case("POST", "/api/tokens", "/api/tokens", (401, 201, 201, 201, 201, 401), lambda: {"json": {"name": "m"}}),
    Case(
        "POST",
        "/api/tokens/revoke",
        "/api/tokens/revoke",
        (401, 404, 404, 404, 200, 401),
        lambda: {"json": {"id": "{token_b}"}},
    ),
    Case("GET", "/api/users", "/api/users", ADMIN_ONLY),
    Case(
        "POST",
        "/api/users",
        "/api/users",
        (401, 403, 403, 403, 201, 401),
        lambda: {"json": {"name": f"m-{uuid.uuid4().hex[:8]}", "role": "viewer"}},
    ),
    Case("GET", "/api/workers", "/api/workers", SIGNED_IN_READ),
    Case("POST", "/api/workers/<hostname>/disable", f"/api/workers/{WORKER}/disable", (401, 403, 403, 403, 202, 401)),
    Case("POST", "/api/workers/<hostname>/enable", f"/api/workers/{WORKER}/enable", (401, 403, 403, 403, 202, 401)),
    Case("GET", "/api/workers/<hostname>/events", f"/api/workers/{WORKER}/events", SIGNED_IN_READ),
    Case("GET", "/", "/", PAGE_READ),
    Case("GET", "/jobs/<job_id>", "/jobs/{job}", PAGE_READ),
    Case("POST", "/jobs/<job_id>/cancel", "/jobs/{job}/cancel", (401, 403, 303, 403, 303, 401)),
    Case("POST", "/jobs/<job_id>/retry", "/jobs/{job}/retry", (401, 403, 303, 403, 303, 401)),
    Case("POST", "/jobs/<job_id>/delete", "/jobs/{job}/delete", (401, 403, 303, 403, 303, 401)),
    Case("GET", "/jobs/new", "/jobs/new", (302, 403, 200, 200, 200, 401)),
    Case("POST", "/jobs/new", "/jobs/new", (401, 403, 400, 400, 400, 401)),
    Case("POST", "/jobs/new/scene", "/jobs/new/scene", (401, 403, 400, 400, 400, 401)),
    Case("POST", "/jobs/new/upload", "/jobs/new/upload", (401, 403, 400, 400, 400, 401)),
    Case("GET", "/login", "/login", (200,) * 6),
    Case("POST", "/login", "/login", (400,) * 6),  # no CSRF token: refused before the password is looked at
    Case("POST", "/logout", "/logout", (401, 303, 303, 303, 303, 401)),
    Case("GET", "/static/<path:filename>", "/static/farm.js", (200,) * 6),
    Case("GET", "/tokens", "/tokens", PAGE_READ),
    Case("POST", "/tokens", "/tokens", (401, 200, 200, 200, 200, 401)),
    Case("POST", "/tokens/<int:token_id>/revoke", "/tokens/{token_b}/revoke", (401, 403, 403, 403, 303, 401)),
    Case("GET", "/users", "/users", (302, 403, 403, 403, 200, 401)),
    Case(
        "POST",
        "/users",
        "/users",
        (401, 403, 403, 403, 303, 401),
        lambda: {"data": {"name": f"p-{uuid.uuid4().hex[:8]}", "role": "viewer"}},
    ),
    Case(
        "POST",
        "/users/<name>",
        "/users/{other}",
        (401, 403, 403, 403, 303, 401),
        lambda: {"data": {"action": "role", "role": "artist"}},
    ),
    Case("GET", "/workers", "/workers", PAGE_READ),
    Case(
        "POST",
        "/workers/<hostname>/<any(enable, disable):action>",
        f"/workers/{WORKER}/enable",
        (401, 403, 403, 403, 303, 401),
    ),
]


def test_every_route_of_the_app_has_a_case(app):  # type: ignore[no-untyped-def]
    routes = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}  # type: ignore[operator]
    }
    assert routes == {(c.method, c.rule) for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method} {c.rule}")
def test_who_may_use_each_route(access, case: Case) -> None:  # type: ignore[no-untyped-def]
    farm, _ = access
    seen = {}
    for column in COLUMNS:
        owner = farm.names["other-artist"] if column == OTHER else farm.names["artist"]
        extra = case.body() if case.body else {}
        values = {
            "job": farm.job(owner) if "{job}" in case.path else "",
            "token_b": farm.token_of("other-artist") if "{token_b}" in str(case.path) + str(extra) else "",
            "other": farm.names["other-artist"],
            "sha": extra.pop("path_sha", ""),
        }
        if isinstance(extra.get("json"), dict):
            extra["json"] = {k: v.format(**values) if isinstance(v, str) else v for k, v in extra["json"].items()}
        headers = {"Authorization": f"Bearer {farm.tokens[column]}"} if column != NONE else {}
        response = requests.request(
            case.method,
            farm.url + case.path.format(**values),
            headers=headers,
            allow_redirects=False,
            timeout=60,
            **extra,
        )
        seen[column] = response.status_code
        if case.path.startswith("/api/") and response.status_code in (401, 403):
            error = response.json()["error"]
            assert error["code"] == ("unauthenticated" if response.status_code == 401 else "forbidden"), error
    assert tuple(seen[c] for c in COLUMNS) == case.expect, seen


def sign_in(url: str, name: str, password: str) -> tuple[requests.Session, str]:
    """A browser-like session signed in through the login form; returns it and its CSRF token."""
    browser = requests.Session()
    form = browser.get(f"{url}/login", timeout=10).text
    response = browser.post(
        f"{url}/login",
        data={"username": name, "password": password, "csrf_token": csrf_in(form)},
        allow_redirects=False,
        timeout=30,
    )
    assert response.status_code == 303, response.text[:300]
    return browser, csrf_in(browser.get(f"{url}/", timeout=10).text)


@pytest.fixture(scope="module")
def artist_login(access, prod_settings):  # type: ignore[no-untyped-def]
    name, _ = make_user(prod_settings, "artist", password="correct horse battery")
    return name, "correct horse battery"


def test_a_session_calls_the_api_with_its_csrf_token_from_this_site_only(access, artist_login) -> None:  # type: ignore[no-untyped-def]
    farm, _ = access
    name, password = artist_login
    browser, token = sign_in(farm.url, name, password)
    job = farm.job(name)
    cancel = f"{farm.url}/api/jobs/{job}/cancel"
    assert browser.get(f"{farm.url}/api/me", timeout=10).json()["user"]["name"] == name  # reads need no token

    refused = browser.post(cancel, timeout=10)
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]["message"]
    assert browser.post(cancel, headers={"X-CSRF-Token": "forged"}, timeout=10).status_code == 403
    for hostile in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
        response = browser.post(cancel, headers={"X-CSRF-Token": token, **hostile}, timeout=10)
        assert response.status_code == 403 and "cross-site" in response.json()["error"]["message"], hostile
    page_form = browser.post(f"{farm.url}/jobs/{job}/cancel", data={"csrf_token": token}, timeout=10,
                             headers={"Origin": "https://evil.example"}, allow_redirects=False)  # fmt: skip
    assert page_form.status_code == 403
    assert browser.get(f"{farm.url}/api/jobs/{job}", timeout=10).json()["job"]["status"] == "QUEUED"  # untouched

    same_site = {"X-CSRF-Token": token, "Origin": farm.url, "Sec-Fetch-Site": "same-origin"}
    done = browser.post(cancel, headers=same_site, timeout=10)
    assert done.status_code == 202 and done.json()["job"]["status"] in ("CANCELING", "CANCELED")
    events = browser.get(f"{farm.url}/api/jobs/{job}/events", timeout=10).json()["events"]
    assert any(e["actor"] == name for e in events if e["to"] in ("CANCELING", "CANCELED"))

    login_from_elsewhere = requests.post(
        f"{farm.url}/login",
        data={"username": name, "password": password},
        headers={"Sec-Fetch-Site": "cross-site"},
        timeout=10,
    )
    assert login_from_elsewhere.status_code == 403


def test_a_session_survives_a_restart_and_ends_on_logout_or_a_password_reset(access, artist_login) -> None:  # type: ignore[no-untyped-def]
    farm, procs = access
    name, password = artist_login
    browser, _ = sign_in(farm.url, name, password)
    procs.stop("web")
    procs.start_web()
    page = browser.get(f"{farm.url}/", timeout=10)
    assert page.status_code == 200 and f">{name} <span" in page.text  # the name in the header, after a restart
    out = browser.post(f"{farm.url}/logout", data={"csrf_token": csrf_in(page.text)}, allow_redirects=False)
    assert out.status_code == 303 and browser.get(f"{farm.url}/", allow_redirects=False).status_code == 302

    browser, _ = sign_in(farm.url, name, password)
    with farm.database.session() as session:
        users.set_password(session, users.find_user(session, name), password, actor="test")  # sessions end
    assert browser.get(f"{farm.url}/", allow_redirects=False, timeout=10).status_code == 302
    wrong = requests.Session().post(f"{farm.url}/login", data={"username": name, "password": "nope"}, timeout=10)
    assert wrong.status_code == 400  # no CSRF token: refused before any password is checked


def test_a_revoked_or_disabled_users_token_stops_at_once_and_tokens_are_kept_as_hashes_never_logged(
    access, prod_settings
) -> None:  # type: ignore[no-untyped-def]
    farm, procs = access
    name, token = make_user(prod_settings, "artist")
    auth = {"Authorization": f"Bearer {token}"}
    me = requests.get(f"{farm.url}/api/me", headers=auth, timeout=10)
    assert me.status_code == 200 and me.json()["user"] == {**me.json()["user"], "name": name, "role": "artist"}
    made = requests.post(f"{farm.url}/api/tokens", headers=auth, json={"name": "ci"}, timeout=10).json()
    second = {"Authorization": f"Bearer {made['token']}"}
    assert made["token"].startswith("farm_") and made["token"].startswith(made["prefix"])
    listed = requests.get(f"{farm.url}/api/tokens", headers=second, timeout=10).json()["tokens"]
    assert {t["id"] for t in listed} >= {made["id"]} and all("token" not in t for t in listed)
    assert next(t for t in listed if t["id"] == made["id"])["last_used_at"]  # this very call used it

    revoked = requests.post(f"{farm.url}/api/tokens/revoke", headers=auth, json={"token": made["token"]}, timeout=10)
    assert revoked.status_code == 200 and revoked.json()["token"]["revoked_at"]
    gone = requests.get(f"{farm.url}/api/me", headers=second, timeout=10)
    assert gone.status_code == 401 and gone.json()["error"]["code"] == "unauthenticated"
    assert "Bearer" in gone.headers["WWW-Authenticate"]
    bad = requests.get(f"{farm.url}/api/me", headers={"Authorization": "Basic eDp5"}, timeout=10)
    assert bad.status_code == 401 and "Bearer" in bad.json()["error"]["message"]

    with farm.database.session() as session:
        rows = session.execute(text("SELECT token_hash, prefix FROM api_tokens")).all()
        stored = " ".join(f"{h} {p}" for h, p in rows)
        assert token not in stored and made["token"] not in stored
        assert hashlib.sha256(token.encode()).hexdigest() in stored
        users.set_disabled(session, users.find_user(session, name), True, actor="test")
        trail = session.execute(
            select(Event.new, Event.actor).where(Event.kind == "user", Event.subject == name).order_by(Event.id)
        ).all()
        assert [tuple(row) for row in trail] == [
            ("created", "test"),
            ("token_created", "test"),
            ("token_created", name),
            ("token_revoked", name),
            ("disabled", "test"),
        ]
    assert requests.get(f"{farm.url}/api/me", headers=auth, timeout=10).status_code == 401
    log = procs.log("web")
    assert "/api/me" in log and token not in log and made["token"] not in log


def test_an_artist_submits_at_most_priority_5_and_lists_their_own_jobs(access, prod_settings) -> None:  # type: ignore[no-untyped-def]
    farm, _ = access
    name, token = make_user(prod_settings, "artist")
    auth = {"Authorization": f"Bearer {token}"}
    high = requests.post(f"{farm.url}/api/jobs", headers=auth, data={"priority": "9"}, timeout=10)
    assert high.status_code == 403 and high.json()["error"] == {
        "code": "forbidden",
        "message": "priorities above 5 are for admins",
        "field": "priority",
    }
    admin = {"Authorization": f"Bearer {farm.tokens[ADMIN]}"}
    assert requests.post(f"{farm.url}/api/jobs", headers=admin, data={"priority": "9"}, timeout=10).status_code == 400

    mine, theirs = farm.job(name), farm.job(farm.names["other-artist"])
    listed = requests.get(f"{farm.url}/api/jobs?owner=me&limit=500", headers=auth, timeout=10).json()["jobs"]
    assert [j["id"] for j in listed] == [mine] and listed[0]["owner"] == name
    everyone = requests.get(f"{farm.url}/api/jobs?limit=500", headers=auth, timeout=10).json()["jobs"]
    assert {mine, theirs} <= {j["id"] for j in everyone}
    page = requests.get(f"{farm.url}/?owner=me", headers=auth, timeout=10).text
    assert mine in page and theirs not in page and '<option value="me" selected>' in page


def test_passwords_are_stored_with_scrypt(access, prod_settings) -> None:  # type: ignore[no-untyped-def]
    farm, _ = access
    name, _ = make_user(prod_settings, "viewer", password="a long enough one")
    with farm.database.session() as session:
        stored = session.scalars(select(User.password_hash).where(User.name == name)).one()
        assert stored.startswith("scrypt:") and "a long enough one" not in stored
        assert users.authenticate(session, name, "a long enough one") is not None
        assert users.authenticate(session, name, "a long enough two") is None
        assert session.scalars(select(ApiToken.prefix).join(User).where(User.name == name)).one().startswith("farm_")
        assert re.fullmatch(r"farm_[A-Za-z0-9_-]{8}", session.scalars(select(ApiToken.prefix)).first() or "")


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/api/tokens/revoke", {"id": "99999999999"}, 404, None),
        ("/api/tokens/revoke", {}, 400, "token"),
        ("/api/tokens", {"name": "n" * 101}, 400, "name"),
        ("/api/users", {"name": "two words", "role": "viewer"}, 400, "name"),
        ("/api/users", {"name": "someone", "role": "owner"}, 400, "role"),
        ("/api/users", {"name": "someone", "role": "viewer", "password": 12345}, 400, "password"),
    ],
)
def test_bad_account_input_is_a_4xx_naming_the_field(access, path, body, status, field) -> None:  # type: ignore[no-untyped-def]
    farm, _ = access
    admin = {"Authorization": f"Bearer {farm.tokens[ADMIN]}"}
    response = requests.post(f"{farm.url}{path}", headers=admin, json=body, timeout=10)
    assert response.status_code == status and response.json()["error"]["field"] == field, response.text
