"""The `farm` command as a user types it, against the live farm; every failure is one line and a non-zero exit."""

import json
import re
import subprocess
import sys
import zipfile

import pytest

from farm.config import load_settings


def test_submit_wait_status_jobs_download(farm_cli, tiny_blend, tmp_path):
    done = farm_cli("submit", str(tiny_blend), "--frames", "2-5", "--chunk-size", "2", "--name", "cli shot", "--wait")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    sent = next(i for i, line in enumerate(lines) if line.startswith("uploaded "))
    assert re.fullmatch(r"uploaded [01] of 1 files \(\d+ bytes\)", lines[sent])  # the .blend uses no other file
    job_id = lines[sent + 1].split()[0]
    assert "completed: cli shot-0002-0005.zip" in done.stdout
    assert "4/4 frames" in done.stderr  # the progress bar reached the end

    status = farm_cli("status", job_id)
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "COMPLETED"
    listed = farm_cli("jobs", "-q", "cli shot")
    assert listed.returncode == 0 and job_id in listed.stdout and "COMPLETED" in listed.stdout

    got = farm_cli("download", job_id, "-o", str(tmp_path))
    assert got.returncode == 0, got.stderr
    path = tmp_path / "cli shot-0002-0005.zip"
    assert got.stdout.strip() == str(path)
    assert sorted(zipfile.ZipFile(path).namelist()) == ["0002.png", "0003.png", "0004.png", "0005.png", "manifest.json"]

    again = farm_cli("cancel", job_id)
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1 and "COMPLETED" in again.stderr and "409" in again.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "no-such-job"], "job no-such-job not found (HTTP 404 not_found)"),
        (["submit", "/nonexistent.blend"], "does not exist"),
        (["submit", "{blend}", "--frames", "9-3"], "frame range ends (3) before it starts (9)"),
        (["submit", "{blend}", "--chunk-size", "0"], "chunk_size must be at least 1"),
        (["submit", "{blend}", "--engine", "POVRAY"], "'POVRAY' is not one of"),
        (["submit", "{blend}", "--resolution", "big"], "--resolution must look like 1920x1080"),
        (["frobnicate"], "No such command 'frobnicate'"),
    ],
)
def test_errors_are_one_line(farm_cli, tiny_blend, args, message):
    result = farm_cli(*[a.replace("{blend}", str(tiny_blend)) for a in args])
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("farm: ") and message in result.stderr, result.stderr


def test_unreachable_farm_is_one_line(farm, tmp_path):
    env = dict(farm.env, FARM_API_URL="http://127.0.0.1:9")
    result = subprocess.run([sys.executable, "-m", "farm", "jobs"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert (
        result.stderr == "farm: cannot reach the farm at http://127.0.0.1:9 (is `farm web` running? set FARM_API_URL)\n"
    )


def test_bad_setting_is_one_line(farm, tmp_path):
    env = dict(farm.env, FARM_MAX_FRAMES="many")
    result = subprocess.run(
        [sys.executable, "-m", "farm", "check"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr == "farm: FARM_MAX_FRAMES must be a whole number, got 'many'\n"


def test_check_reports_every_service(farm, farm_cli):
    result = farm_cli("check", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    for line in (
        "ok    database  postgresql answers",
        "ok    schema    the database is at revision",
        "ok    broker",
        "ok    storage   s3://",
        "ok    blender",
    ):
        assert line in result.stdout, result.stdout
    printed = dict(line.split(maxsplit=1) for line in result.stdout.splitlines() if line.startswith("FARM_"))
    assert printed == load_settings(farm.env, dotenv_path=None).describe()  # every setting, as the worker reads it
    assert printed["FARM_HEARTBEAT_SECONDS"] == "1" and printed["FARM_SECRET_KEY"] == "(set, hidden)"
    assert farm.env["FARM_SECRET_KEY"] not in result.stdout
