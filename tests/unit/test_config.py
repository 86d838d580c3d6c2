import ast
import re
import secrets
from dataclasses import fields
from pathlib import Path

import pytest

from farm.config import ConfigError, load_settings, variable

ROOT = Path(__file__).resolve().parents[2]
VARIABLE = re.compile(r"FARM_[A-Z0-9_]+")


def test_embedded_defaults_need_no_servers(tmp_path):
    settings = load_settings({"FARM_INSTANCE_DIR": str(tmp_path)}, dotenv_path=None)
    assert settings.database_url == f"sqlite:///{tmp_path / 'farm.sqlite'}"
    assert settings.embedded_broker and settings.broker_folder == tmp_path / "broker"
    assert settings.result_backend.startswith("db+sqlite:///")
    assert settings.storage_url == (tmp_path / "storage").as_uri()
    assert settings.max_frames == 1_000_000
    assert (settings.max_chunks, settings.max_samples, settings.max_probes) == (10_000, 16_384, 4)
    assert settings.max_pixels == 100_000_000
    assert settings.warm_blender and settings.renderer == "blender" and settings.chunk_target_seconds == 60
    assert settings.frame_cache_max_bytes == 10 * 2**30
    assert settings.worker_db_connections == 1  # each worker process keeps one; 0: none between transactions
    off = load_settings({"FARM_INSTANCE_DIR": str(tmp_path), "FARM_FRAME_CACHE_GB": "0"}, dotenv_path=None)
    assert off.frame_cache_max_bytes == 0  # a worker keeps no frames
    assert len(settings.secret_key) == 64
    # the generated key is kept, so sessions survive a restart
    assert load_settings({"FARM_INSTANCE_DIR": str(tmp_path)}, dotenv_path=None).secret_key == settings.secret_key


def test_dotenv_is_read_and_environment_wins(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("FARM_MAX_FRAMES=500\nFARM_QUEUE=from-dotenv\n")
    settings = load_settings({"FARM_INSTANCE_DIR": str(tmp_path), "FARM_QUEUE": "from-env"}, dotenv_path=dotenv)
    assert settings.max_frames == 500
    assert settings.queue == "from-env"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FARM_MAX_FRAMES", "lots", "FARM_MAX_FRAMES must be a whole number"),
        ("FARM_MAX_FRAMES", "0", "FARM_MAX_FRAMES must be at least 1"),
        ("FARM_MAX_PROBES", "0", "FARM_MAX_PROBES must be at least 1"),
        ("FARM_FRAME_CACHE_GB", "-1", "FARM_FRAME_CACHE_GB must be at least 0"),
        ("FARM_WORKER_DB_CONNECTIONS", "-1", "FARM_WORKER_DB_CONNECTIONS must be at least 0"),
        ("FARM_HEARTBEAT_SECONDS", "-1", "FARM_HEARTBEAT_SECONDS must be above 0"),
        ("FARM_STORAGE_URL", "ftp://x", "FARM_STORAGE_URL must start with one of s3://, file://"),
        ("FARM_STORAGE_URL", "s3://", "must name a bucket"),
        ("FARM_DATABASE_URL", "mongodb://x", "FARM_DATABASE_URL must start with"),
        ("FARM_BROKER_URL", "kafka://x", "FARM_BROKER_URL must start with"),
        ("FARM_QUEUE", "a b", "FARM_QUEUE may hold"),
        ("FARM_WARM_BLENDER", "maybe", "FARM_WARM_BLENDER must be 1 or 0"),
        ("FARM_RENDERER", "null", "FARM_RENDERER must be blender"),
        ("FARM_CHUNK_TARGET_SECONDS", "0", "FARM_CHUNK_TARGET_SECONDS must be above 0"),
        ("FARM_PRESIGN_SECONDS", "604801", "FARM_PRESIGN_SECONDS must be at most 604800"),
        ("FARM_S3_PUBLIC_URL", "minio:9000", "FARM_S3_PUBLIC_URL must start with http:// or https://"),
        ("FARM_HTTPS", "maybe", "FARM_HTTPS must be 1 or 0"),
    ],
)
def test_junk_values_fail_with_the_variable_named(tmp_path, name, value, message):
    with pytest.raises(ConfigError, match=message):
        load_settings({"FARM_INSTANCE_DIR": str(tmp_path), name: value}, dotenv_path=None)


def test_broker_folder_from_url(tmp_path):
    settings = load_settings(
        {"FARM_INSTANCE_DIR": str(tmp_path), "FARM_BROKER_URL": f"filesystem://{tmp_path}/q"}, dotenv_path=None
    )
    assert settings.broker_folder == Path(f"{tmp_path}/q")


def test_submission_limits_are_settings(tmp_path):
    env = {"FARM_MAX_CHUNKS": "50", "FARM_MAX_SAMPLES": "64", "FARM_MAX_MEGAPIXELS": "2", "FARM_MAX_PROBES": "1"}
    settings = load_settings({"FARM_INSTANCE_DIR": str(tmp_path), **env}, dotenv_path=None)
    assert (settings.max_chunks, settings.max_samples, settings.max_pixels, settings.max_probes) == (50, 64, 2e6, 1)
    assert {k: settings.describe()[k] for k in env} == env


def test_describe_hides_passwords(tmp_path):
    key = secrets.token_hex(32)
    settings = load_settings(
        {
            "FARM_INSTANCE_DIR": str(tmp_path),
            "FARM_DATABASE_URL": "postgresql://farm:s3cret@db/farm",
            "FARM_BROKER_URL": "redis://:br0ker@redis:6379/0",
            "FARM_SECRET_KEY": key,
        },
        dotenv_path=None,
    )
    described = settings.describe()
    assert "s3cret" not in str(described) and "br0ker" not in str(described) and key not in str(described)
    assert described["FARM_DATABASE_URL"] == "postgresql://farm:***@db/farm"
    assert described["FARM_SECRET_KEY"] == "(set, hidden)"


# Variables the farm sets for its own children, not settings: `farm worker` hands each child process its devices,
# and each Blender gets the descriptor of its private event pipe.
HANDOFFS = {"FARM_WORKER_DEVICES", "FARM_EVENTS_FD"}


def variables_in_code() -> set[str]:
    """Every FARM_* name the code spells out as a string (what it reads or sets), from its syntax trees."""
    names = set()
    for package in ("farm", "webapp", "workers"):
        for source in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text(), str(source))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and VARIABLE.fullmatch(node.value):
                    names.add(node.value)
    return names


def variables_in_readme() -> set[str]:
    """The variables the README's settings table has a row for (one row may name several: `A` / `B`)."""
    rows = re.findall(r"^\| (`FARM_[^|]*)\|", (ROOT / "README.md").read_text(), re.MULTILINE)
    return {name for row in rows for name in re.findall(r"`(FARM_[A-Z0-9_]+)`", row)}


def test_every_setting_the_code_reads_is_listed_by_farm_check_and_the_readme(tmp_path):
    settings = load_settings({"FARM_INSTANCE_DIR": str(tmp_path)}, dotenv_path=None)
    listed = set(settings.describe())
    read = variables_in_code() - HANDOFFS
    assert len(read) > 40 and {"FARM_HEARTBEAT_SECONDS", "FARM_BROKER_VISIBILITY_SECONDS"} <= read
    assert sorted(read - listed) == [], "read but not listed by `farm check`"
    assert sorted(listed - read) == [], "listed by `farm check` but read nowhere"
    assert sorted(read - variables_in_readme()) == [], "read but missing from the README's settings table"
    assert sorted(variables_in_readme() - read) == [], "in the README's settings table but read nowhere"
    assert {variable(setting) for setting in fields(settings)} == listed  # one per field
