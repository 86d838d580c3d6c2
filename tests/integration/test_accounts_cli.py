"""The account commands as a user runs them, against `farm web` on Postgres: `farm users create` beside the
database, `farm tokens create|list|revoke` and `farm login` over the API, and `farm web`'s word on a farm with no
users."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.conftest import PG_HOST
from tests.helpers import HTTP, free_port, wait_until


def farm(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farm", *args], env=env, input=stdin, capture_output=True, text=True, timeout=120
    )


@pytest.fixture()
def env(own_farm, tmp_path: Path) -> dict[str, str]:
    """The farm's environment without its admin token, and a config folder of this test's own."""
    clean = {k: v for k, v in own_farm.env.items() if k != "FARM_TOKEN"}
    return dict(clean, XDG_CONFIG_HOME=str(tmp_path / "config"))


def me(url: str, token: str) -> int:
    return HTTP.get(f"{url}/api/me", headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code


def test_users_create_prints_a_working_token_last_and_refuses_mistakes_in_one_line(own_farm, env) -> None:  # type: ignore[no-untyped-def]
    name = f"cli-{uuid.uuid4().hex[:8]}"
    made = farm(env, "users", "create", name, "--role", "artist", "--password-stdin", stdin="s3cret password\n")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("farm_") and me(own_farm.url, token) == 200
    again = farm(env, "users", "create", name, "--role", "artist")
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "already exists" in again.stderr
    role = farm(env, "users", "create", f"{name}-x", "--role", "owner")
    assert role.returncode == 2 and role.stderr.count("\n") == 1 and "'owner' is not one of" in role.stderr
    short = farm(env, "users", "create", f"{name}-y", "--role", "viewer", "--password-stdin", stdin="short\n")
    assert short.returncode == 1 and "at least 8 characters" in short.stderr


def test_tokens_create_list_revoke_and_login_stores_the_token_for_the_client_commands(own_farm, env) -> None:  # type: ignore[no-untyped-def]
    first = farm(env, "users", "create", f"cli-{uuid.uuid4().hex[:8]}", "--role", "artist").stdout.split()[-1]
    unsigned = farm(env, "jobs")
    assert unsigned.returncode == 1 and "FARM_TOKEN" in unsigned.stderr and "farm login" in unsigned.stderr

    login = farm(env, "login", "--token-stdin", stdin=first + "\n")
    assert login.returncode == 0, login.stderr
    stored = Path(env["XDG_CONFIG_HOME"]) / "farm" / "token"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600 and stored.read_text().strip() == first
    assert farm(env, "jobs").returncode == 0  # the stored token, with no FARM_TOKEN

    second = farm(env, "tokens", "create", "--name", "ci")
    assert second.returncode == 0, second.stderr
    token = second.stdout.strip().splitlines()[-1]
    listed = farm(env, "tokens", "list").stdout
    assert token[:13] in listed and first[:13] in listed and token not in listed and first not in listed
    token_id = next(line.split()[0] for line in listed.splitlines() if token[:13] in line)

    assert farm(dict(env, FARM_TOKEN=token), "tokens", "revoke", token_id).returncode == 0
    assert me(own_farm.url, token) == 401
    assert farm(env, "tokens", "revoke", first).returncode == 0  # by the token itself, the one `farm login` stored
    assert me(own_farm.url, first) == 401
    refused = farm(env, "jobs")
    assert refused.returncode == 1 and "unauthenticated" in refused.stderr and refused.stderr.count("\n") == 1
    bad = farm(env, "login", "--token-stdin", stdin="farm_not-a-token\n")
    assert bad.returncode == 1 and "HTTP 401" in bad.stderr


def test_farm_web_on_a_farm_with_no_users_says_how_to_make_the_first_admin(prod_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    name = f"farm_test_fresh_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{PG_HOST}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    env = dict(
        {**os.environ, **prod_env},
        FARM_DATABASE_URL=f"{PG_HOST}/{name}",
        FARM_RESULT_BACKEND=f"db+{PG_HOST}/{name}",
        FARM_PROBE_SPARE="0",
    )
    log = tmp_path / "web.log"
    with open(log, "wb") as out:
        web = subprocess.Popen(
            [sys.executable, "-m", "farm", "web", "--port", str(free_port())], env=env, stdout=out, stderr=out
        )
    try:
        said = wait_until(lambda: "no users yet" in log.read_text() and log.read_text(), timeout=60, what="the hint")
        assert "farm users create NAME --role admin" in said
        made = farm(env, "users", "create", "first-admin", "--role", "admin")
        assert made.returncode == 0 and made.stdout.split()[-1].startswith("farm_")
    finally:
        web.terminate()
        web.wait(30)
        with psycopg.connect(f"{PG_HOST}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
