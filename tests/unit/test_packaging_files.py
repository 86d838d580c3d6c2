"""The files that ship with the project stay valid: compose.yaml parses and deploys safely (pinned images, no
default secret, Redis and MinIO locked), the README starts with its two commands."""

import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` with only `env_file` (an operator's .env) as the source of the variables."""
    docker_compose = shutil.which("docker-compose")
    assert docker_compose, "docker-compose is not installed (.ci/run installs Debian's package)"
    required = set(REQUIRED.findall((ROOT / "compose.yaml").read_text()))
    return subprocess.run(
        [docker_compose, "--env-file", str(env_file), "-f", str(ROOT / "compose.yaml"), "config"],
        env={k: v for k, v in os.environ.items() if k not in required},
        capture_output=True,
        text=True,
        timeout=60,
    )


REQUIRED = re.compile(r"\$\{(\w+):\?")  # ${VAR:?message}: compose stops with the message while VAR is unset


@pytest.fixture()
def operator_env(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The .env an operator writes from .env.example: every secret random, the public S3 address filled in."""
    names = re.findall(r"^(\w+)=", (ROOT / ".env.example").read_text(), re.MULTILINE)
    values = {name: secrets.token_hex(32) for name in names} | {"FARM_S3_PUBLIC_URL": "https://files.example.org"}
    path = tmp_path / ".env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path, values


def test_compose_file_is_valid(operator_env):
    env_file, values = operator_env
    result = compose_config(env_file)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert {"web", "worker", "worker-gpu", "redis", "postgres", "minio", "minio-init"} <= set(services)
    env = services["worker"]["environment"]
    assert env["FARM_BROKER_URL"].startswith("redis://")
    assert env["FARM_RESULT_BACKEND"].startswith("db+postgresql://")
    assert env["FARM_STORAGE_URL"].startswith("s3://") and env["FARM_S3_ENDPOINT_URL"]
    assert services["web"]["environment"] == env and env["FARM_SECRET_KEY"] == values["FARM_SECRET_KEY"]


def test_compose_pins_every_image_to_a_version(operator_env):
    services = yaml.safe_load(compose_config(operator_env[0]).stdout)["services"]
    for name, service in services.items():
        image = service["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else None
        assert tag and tag != "latest" and any(c.isdigit() for c in tag), f"{name}: {image}"


def test_compose_locks_redis_and_minio(operator_env):
    env_file, values = operator_env
    services = yaml.safe_load(compose_config(env_file).stdout)["services"]
    redis = services["redis"]["command"]
    assert redis[redis.index("--requirepass") + 1] == values["REDIS_PASSWORD"]
    farm = services["worker"]["environment"]
    assert farm["FARM_BROKER_URL"] == f"redis://:{values['REDIS_PASSWORD']}@redis:6379/0"

    minio = services["minio"]
    assert [str(p["target"]) for p in minio.get("ports", [])] == ["9000"]  # the S3 API, never the console
    assert "--console-address" not in minio["command"] and minio["environment"]["MINIO_BROWSER"] == "off"
    # the farm signs in as the bucket-scoped user minio-init makes, not as MinIO's root
    assert farm["AWS_ACCESS_KEY_ID"] != minio["environment"]["MINIO_ROOT_USER"]
    assert farm["AWS_SECRET_ACCESS_KEY"] == values["MINIO_FARM_PASSWORD"] != values["MINIO_ROOT_PASSWORD"]
    init = services["minio-init"]
    script = "\n".join(init["command"])
    assert init["image"].startswith("minio/mc:")
    assert "mc mb --ignore-existing local/farm" in script
    assert '"arn:aws:s3:::farm"' in script and '"arn:aws:s3:::farm/*"' in script and '"*"' not in script
    assert f"mc admin user add local {farm['AWS_ACCESS_KEY_ID']}" in script
    assert f"mc admin policy attach local farm-bucket --user {farm['AWS_ACCESS_KEY_ID']}" in script
    for name in ("web", "worker", "worker-gpu"):
        assert services[name]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
        assert services[name]["cap_drop"] == ["ALL"]
    assert farm["FARM_S3_PUBLIC_URL"] == "https://files.example.org"  # presigned links browsers can follow


def test_compose_holds_no_secret_and_stops_without_the_operators(tmp_path):
    """Every password and key in compose.yaml is a ${VAR:?message} the operator's .env fills; with none, compose
    names what is missing instead of starting with a default."""
    raw = (ROOT / "compose.yaml").read_text()
    from_env = re.compile(r"\$\{\w+:\?[^}]+\}")
    settings = re.findall(r"^\s*([A-Z_]+):\s*(.+?)\s*(?:#.*)?$", raw, re.MULTILINE)
    literal = [k for k, v in settings if re.search(r"PASSWORD|SECRET|_KEY$", k) and not from_env.fullmatch(v)]
    literal += [pw for pw in re.findall(r"://[^:/@\s]*:([^@\n]+)@", raw) if not from_env.fullmatch(pw)]
    assert not literal, literal
    assert re.search(r'"--requirepass", "\$\{REDIS_PASSWORD:\?', raw)
    assert set(REQUIRED.findall(raw)) == set(re.findall(r"^(\w+)=$", (ROOT / ".env.example").read_text(), re.M))

    empty = tmp_path / ".env"
    empty.write_text("")
    result = compose_config(empty)
    assert result.returncode != 0
    assert re.search(r"set \w+ in \.env", result.stderr), result.stderr


def test_readme_starts_with_the_two_commands():
    lines = [ln for ln in (ROOT / "README.md").read_text().splitlines() if ln.strip()]
    commands = [ln for ln in lines[:8] if ln.startswith(("make ", "    make "))]
    assert [c.split()[1] for c in commands][:2] == ["demo", "test"], lines[:8]
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.rstrip().endswith("make test")
