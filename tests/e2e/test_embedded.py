"""`farm demo` on the embedded defaults — SQLite, the filesystem broker, file:// storage — in a clean folder with
no FARM_* settings: what a new user gets from the README's first command."""

import os
import subprocess
import sys
import zipfile

from tests.helpers import check_zip, free_port


def test_demo_renders_end_to_end_without_servers(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FARM_", "AWS_"))}
    result = subprocess.run(
        [sys.executable, "-m", "farm", "demo", "--frames", "4", "--chunk-size", "2", "--port", str(free_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    zip_path = tmp_path / "demo-output" / "demo-0001-0004.zip"
    assert f"zip: {zip_path}" in result.stdout
    assert "url: http://127.0.0.1:" in result.stdout and "/asset" in result.stdout
    assert "4/4 frames" in result.stderr  # the progress bar
    check_zip(zip_path.read_bytes(), name="demo", frames=range(1, 5), size=(320, 180))
    instance = tmp_path / "instance"
    assert (instance / "farm.sqlite").is_file() and (instance / "celery-results.sqlite").is_file()
    assert (instance / "broker" / "queue").is_dir()
    stored = list((instance / "storage" / "jobs").glob("*/demo-0001-0004.zip"))
    assert len(stored) == 1 and zipfile.ZipFile(stored[0]).namelist() == zipfile.ZipFile(zip_path).namelist()
