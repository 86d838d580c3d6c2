"""The files that ship with the project stay valid: compose.yaml parses, the README starts with its two commands."""

import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_is_valid():
    docker_compose = shutil.which("docker-compose")
    assert docker_compose, "docker-compose is not installed (.ci/run installs Debian's package)"
    result = subprocess.run(
        [docker_compose, "-f", str(ROOT / "compose.yaml"), "config"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert {"web", "worker", "worker-gpu", "redis", "postgres", "minio"} <= set(config["services"])
    env = config["services"]["worker"]["environment"]
    assert env["FARM_BROKER_URL"].startswith("redis://")
    assert env["FARM_RESULT_BACKEND"].startswith("db+postgresql://")
    assert env["FARM_STORAGE_URL"].startswith("s3://") and env["FARM_S3_ENDPOINT_URL"]


def test_readme_starts_with_the_two_commands():
    lines = [ln for ln in (ROOT / "README.md").read_text().splitlines() if ln.strip()]
    commands = [ln for ln in lines[:8] if ln.startswith(("make ", "    make "))]
    assert [c.split()[1] for c in commands][:2] == ["demo", "test"], lines[:8]
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.rstrip().endswith("make test")
