"""Safe deployment in the app: no default secret key on a shared database."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys

import pytest

from farm.config import load_settings, secret_key_problem

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
