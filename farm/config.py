"""Typed settings read from the environment (and an optional `.env`), one line per variable.

Every value is checked here, so a typo fails at start-up with one clear line instead of deep inside a task.
The defaults need no servers at all: SQLite, a filesystem broker and `file://` storage under `instance/`.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from dotenv import dotenv_values
from limits import parse_many

MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # the longest a SigV4 presigned URL may last


class ConfigError(ValueError):
    """A setting has a value the farm cannot use; the message names the variable."""


def _listed(variable: str | None = None, *, unit: int = 1, unset: str | None = None, secret: bool = False) -> Any:
    """How `farm check` lists a field, where the field alone does not say: its variable when that is not
    FARM_<FIELD>, the unit the variable counts in (the field holds bytes, pixels), what an empty value means, or a
    secret that is never printed."""
    return field(metadata={"variable": variable, "unit": unit, "unset": unset, "secret": secret})


def variable(setting: Field[Any]) -> str:
    """The FARM_* variable a Settings field is read from."""
    return setting.metadata.get("variable") or f"FARM_{setting.name.upper()}"


@dataclass(frozen=True)
class Settings:
    instance_dir: Path
    database_url: str
    broker_url: str
    result_backend: str
    storage_url: str
    s3_endpoint_url: str | None = _listed(unset="(AWS default)")
    # the S3 endpoint as browsers reach it; presigned URLs are signed for this host
    s3_public_url: str | None = _listed(unset="(FARM_S3_ENDPOINT_URL)")
    presign_seconds: int  # how long a presigned download URL lasts
    blender: str | None = _listed(unset="(bpy module, else blender on PATH)")
    secret_key: str = _listed(secret=True)
    api_url: str
    # FARM_TOKEN: the API token client commands send; else the file `farm login` wrote
    token: str | None = _listed(secret=True)
    queue: str
    max_frames: int
    max_chunks: int  # chunks (Celery tasks) one job may be split into
    max_samples: int
    # pixels in one rendered frame, after the resolution percentage
    max_pixels: int = _listed("FARM_MAX_MEGAPIXELS", unit=10**6)
    max_probes: int  # Blender probes one web process runs at once; past that a submission is answered 503 busy
    max_upload_bytes: int = _listed("FARM_MAX_UPLOAD_MB", unit=2**20)
    max_zip_bytes: int = _listed("FARM_MAX_ZIP_MB", unit=2**20)
    cache_dir: Path
    cache_max_bytes: int = _listed("FARM_CACHE_MAX_GB", unit=2**30)
    # a worker keeps the frames it rendered, up to this, for a packager on its machine
    frame_cache_max_bytes: int = _listed("FARM_FRAME_CACHE_GB", unit=2**30)
    blob_ttl_days: float  # a project file no job has used for this long is deleted from storage
    # a finished job is deleted this long after it finished; None: kept forever
    retention_days: float | None = _listed(unset="(keep forever)")
    multipart_abort_hours: float  # an S3 multipart upload started this long ago and never finished is aborted
    schema_wait_seconds: float  # how long a worker waits for the web app to upgrade the database schema
    preview_ttl_hours: float  # a preview job (`preview=1`) is deleted, results and all, this long after it ended
    # free-space floor under the cache (a worker) and instance folder (the web host)
    min_free_bytes: int = _listed("FARM_MIN_FREE_GB", unit=2**30)
    heartbeat_seconds: float
    worker_timeout_seconds: float
    probe_timeout_seconds: float
    frame_timeout_seconds: float
    chunk_attempts: int
    packaging_attempts: int  # packaging runs a job gets before it is FAILED
    packaging_soft_seconds: float  # Celery's soft time limit on one packaging run: it fails cleanly
    packaging_hard_seconds: float  # and its hard limit: the pool process is killed
    blocklist_failures: int
    janitor_seconds: float
    # database connections each worker process keeps open between transactions; 0: one opened per transaction
    worker_db_connections: int
    visibility_seconds: float = _listed("FARM_BROKER_VISIBILITY_SECONDS")
    warm_blender: bool
    warm_max_chunks: int
    warm_max_bytes: int = _listed("FARM_WARM_MAX_MB", unit=2**20)
    chunk_target_seconds: float
    probe_frame_seconds: float
    probe_spare: bool  # the web app keeps a started Blender for the next submission's probe
    renderer: str  # "blender"; for benchmarks only: "null-benchmark-only", "sleep-benchmark-only:SECONDS"
    blender_max_memory_mb: int = _listed(unset="(no cap)")  # RLIMIT_AS of every Blender the farm starts; 0: no cap
    blender_nice: int  # added to every Blender's nice value; 0: the farm's own priority
    trusted_scripts: bool  # files' own Python runs (drivers, registered text blocks): only where every file is trusted
    web_threads: int  # threads per `farm web` process; live streams may hold three in four
    https: bool  # browsers reach the web app over https (a proxy in front terminates TLS)
    # every job's end is also POSTed here (the operator's own endpoint: never refused)
    webhook_url: str | None = _listed(unset="(none)")
    webhook_secret: str = _listed(secret=True)  # HMAC-SHA256 key of X-Farm-Signature; empty: deliveries go unsigned
    webhook_allow_private: bool  # notify_url may point at loopback and private addresses
    webhook_backoff_seconds: float  # the first retry of a failed delivery waits this long, each next one twice as long
    webhook_retry_seconds: float  # after this long since the job ended, a delivery that still fails is given up
    # where `farm worker` serves its /metrics for Prometheus; 0: it serves none
    metrics_port: int = _listed(unset="(none)")
    user_max_active_jobs: int | None = _listed(unset="(no limit)")  # jobs one owner may have not yet ended
    # frames one owner may have waiting or rendering
    user_max_queued_frames: int | None = _listed(unset="(no limit)")
    # rate of submissions per user, in flask-limiter's notation; None: no limit
    submit_limit: str | None = _listed(unset="off")
    login_limit: str | None = _listed(unset="off")  # rate of login attempts per client address; None: no limit

    @property
    def max_streams(self) -> int:
        """Live streams one web process serves; the other quarter of its threads stays free for the API and pages."""
        return max(1, self.web_threads * 3 // 4)

    @property
    def production(self) -> bool:
        """A shared database (not the embedded SQLite file): `farm web` then needs a real FARM_SECRET_KEY."""
        return _shared_database(self.database_url)

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url.startswith("filesystem://")

    @property
    def broker_folder(self) -> Path:
        """Folder of the server-free broker: the URL's path, or `instance/broker`."""
        path = urlparse(self.broker_url).path
        return Path(path) if path not in ("", "/") else self.instance_dir / "broker"

    def describe(self) -> dict[str, str]:
        """The effective settings for `farm check`: every field under its variable, so a new setting is listed
        without a change here; secrets and the passwords in URLs hidden."""
        return {variable(setting): _shown(getattr(self, setting.name), setting) for setting in fields(self)}

    @property
    def rate_limit_storage(self) -> str:
        """Where request counts live: the broker's Redis, shared by every web process; on the embedded defaults
        (no Redis) each web process counts in its own memory."""
        return self.broker_url if self.broker_url.startswith(("redis://", "rediss://")) else "memory://"


def _shown(value: Any, setting: Field[Any]) -> str:
    if setting.metadata.get("secret"):
        return "(set, hidden)" if value else "(not set)"
    if not value and setting.metadata.get("unset"):
        return setting.metadata["unset"]
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        number = value / setting.metadata.get("unit", 1)
        return str(int(number)) if float(number).is_integer() else f"{number:g}"
    return _hide_password(str(value))

    @property
    def rate_limit_storage(self) -> str:
        """Where request counts live: the broker's Redis, shared by every web process; on the embedded defaults
        (no Redis) each web process counts in its own memory."""
        return self.broker_url if self.broker_url.startswith(("redis://", "rediss://")) else "memory://"


def _shared_database(url: str) -> bool:
    return not url.startswith("sqlite")


def _hide_password(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@", 1)
    return url


def _positive_int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _optional_limit(env: Mapping[str, str], name: str) -> int | None:
    """A per-user limit: unset means none."""
    return _positive_int(env, name, 0) or None


def _rate(env: Mapping[str, str], name: str, default: str) -> str | None:
    """A rate in flask-limiter's notation (`30 per minute`, `5/second;100/hour`), or `off`: checked here so a typo
    fails at start-up."""
    value = env.get(name, "").strip() or default
    if value.lower() == "off":
        return None
    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(f"{name} must be a rate such as '30 per minute' (or off), got {value!r}") from None
    return value


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be above 0, got {value}")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1 or 0, got {raw!r}")


def _renderer(env: Mapping[str, str]) -> str:
    value = env.get("FARM_RENDERER", "").strip() or "blender"
    if value in ("blender", "null-benchmark-only") or re.fullmatch(r"sleep-benchmark-only:\d+(\.\d+)?", value):
        return value
    raise ConfigError(
        "FARM_RENDERER must be blender (or, for benchmarks, null-benchmark-only or sleep-benchmark-only:SECONDS), "
        f"got {value!r}"
    )


def _webhook_url(env: Mapping[str, str]) -> str | None:
    value = env.get("FARM_WEBHOOK_URL", "").strip() or None
    if value and (urlparse(value).scheme not in ("http", "https") or not urlparse(value).hostname):
        raise ConfigError(f"FARM_WEBHOOK_URL must be an http:// or https:// URL, got {value!r}")
    return value


def _url(env: Mapping[str, str], name: str, default: str, schemes: tuple[str, ...]) -> str:
    value = env.get(name, "").strip() or default
    scheme = value.split("://", 1)[0] if "://" in value else ""
    if not any(scheme == s or scheme.startswith(s + "+") for s in schemes):
        raise ConfigError(f"{name} must start with one of {', '.join(s + '://' for s in schemes)}, got {value!r}")
    return value


# Values seen in examples and tutorials; a key containing one was typed by a person, not generated.
PLACEHOLDER_WORDS = ("changeme", "change-me", "change_me", "secret", "password", "example", "insecure", "default")


def secret_key_problem(key: str) -> str | None:
    """Why `key` cannot protect a shared farm's sessions (anyone who knows it can forge a session cookie and its
    CSRF token), or None. Generated keys are long and random; what people type is short or a placeholder."""
    if not key:
        return "is not set"
    if len(key) < 32:
        return "is shorter than 32 characters"
    lowered = key.lower()
    word = next((w for w in PLACEHOLDER_WORDS if w in lowered), None)
    if word:
        return f"looks like a placeholder (it contains {word!r})"
    if len(set(key)) < 10:
        return "repeats too few characters to be random"
    return None


def require_secret_key(settings: Settings) -> None:
    """`farm web` on a shared database refuses a missing or well-known FARM_SECRET_KEY, in one line."""
    problem = secret_key_problem(settings.secret_key) if settings.production else None
    if problem:
        raise ConfigError(
            f"FARM_SECRET_KEY {problem}; a farm on a shared database needs a random one: "
            "python3 -c 'import secrets; print(secrets.token_hex(32))'"
        )


def _secret_key(env: Mapping[str, str], instance_dir: Path, production: bool) -> str:
    """FARM_SECRET_KEY; else, on the embedded defaults, a key generated once into instance/ (readable by its owner
    only) so sessions survive restarts. A production farm gets none: `farm web` refuses to start without one."""
    if env.get("FARM_SECRET_KEY"):
        return env["FARM_SECRET_KEY"]
    if production:
        return ""
    path = instance_dir / "secret_key"
    if not path.exists():
        instance_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
        tmp.replace(path)
    return path.read_text().strip()


def load_settings(environ: Mapping[str, str] | None = None, dotenv_path: str | os.PathLike | None = ".env") -> Settings:
    """Settings from `environ` (default: os.environ) over the `.env` file, if there is one."""
    env: dict[str, str] = {}
    if dotenv_path and Path(dotenv_path).is_file():
        env.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    env.update(os.environ if environ is None else environ)

    instance_dir = Path(env.get("FARM_INSTANCE_DIR") or "instance").resolve()
    storage_url = _url(env, "FARM_STORAGE_URL", (instance_dir / "storage").as_uri(), ("s3", "file"))
    if storage_url.startswith("s3://") and not urlparse(storage_url).netloc:
        raise ConfigError(f"FARM_STORAGE_URL must name a bucket (s3://BUCKET[/prefix]), got {storage_url!r}")
    if storage_url.startswith("file://") and not urlparse(storage_url).path.startswith("/"):
        raise ConfigError(f"FARM_STORAGE_URL must be an absolute file:///path, got {storage_url!r}")
    queue = env.get("FARM_QUEUE", "").strip() or "farm"
    # Zipping 100,000 frames of a few MiB each streams a few hundred GiB: about an hour at 100 MB/s.
    packaging_soft = _positive_float(env, "FARM_PACKAGING_SOFT_SECONDS", 4 * 3600.0)
    packaging_hard = _positive_float(env, "FARM_PACKAGING_HARD_SECONDS", packaging_soft + 600.0)
    if packaging_hard <= packaging_soft:
        raise ConfigError(
            f"FARM_PACKAGING_HARD_SECONDS ({packaging_hard}) must be above FARM_PACKAGING_SOFT_SECONDS "
            f"({packaging_soft}): the soft limit is what lets a packaging run fail cleanly"
        )
    if not queue.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ConfigError(f"FARM_QUEUE may hold letters, digits, '-', '_' and '.', got {queue!r}")
    database_url = _url(env, "FARM_DATABASE_URL", f"sqlite:///{instance_dir / 'farm.sqlite'}", ("sqlite", "postgresql"))
    s3_public_url = env.get("FARM_S3_PUBLIC_URL", "").strip().rstrip("/") or None
    if s3_public_url and urlparse(s3_public_url).scheme not in ("http", "https"):
        raise ConfigError(f"FARM_S3_PUBLIC_URL must start with http:// or https://, got {s3_public_url!r}")
    presign_seconds = _positive_int(env, "FARM_PRESIGN_SECONDS", 3600)
    if presign_seconds > MAX_PRESIGN_SECONDS:
        raise ConfigError(f"FARM_PRESIGN_SECONDS must be at most {MAX_PRESIGN_SECONDS} (7 days), got {presign_seconds}")
    return Settings(
        instance_dir=instance_dir,
        database_url=database_url,
        broker_url=_url(env, "FARM_BROKER_URL", "filesystem://", ("filesystem", "redis", "rediss")),
        result_backend=_url(
            env,
            "FARM_RESULT_BACKEND",
            f"db+sqlite:///{instance_dir / 'celery-results.sqlite'}",
            ("db", "redis", "rediss"),
        ),
        storage_url=storage_url,
        s3_endpoint_url=env.get("FARM_S3_ENDPOINT_URL", "").strip() or None,
        s3_public_url=s3_public_url,
        presign_seconds=presign_seconds,
        blender=env.get("FARM_BLENDER", "").strip() or None,
        secret_key=_secret_key(env, instance_dir, production=_shared_database(database_url)),
        api_url=(env.get("FARM_API_URL", "").strip() or "http://127.0.0.1:5000").rstrip("/"),
        token=env.get("FARM_TOKEN", "").strip() or None,
        queue=queue,
        max_frames=_positive_int(env, "FARM_MAX_FRAMES", 1_000_000),
        max_chunks=_positive_int(env, "FARM_MAX_CHUNKS", 10_000),
        max_samples=_positive_int(env, "FARM_MAX_SAMPLES", 16_384),
        max_pixels=_positive_int(env, "FARM_MAX_MEGAPIXELS", 100) * 10**6,
        max_probes=_positive_int(env, "FARM_MAX_PROBES", 4),
        max_upload_bytes=_positive_int(env, "FARM_MAX_UPLOAD_MB", 2048) * 2**20,
        max_zip_bytes=_positive_int(env, "FARM_MAX_ZIP_MB", 20480) * 2**20,
        cache_dir=Path(env.get("FARM_CACHE_DIR") or instance_dir / "cache").resolve(),
        cache_max_bytes=_positive_int(env, "FARM_CACHE_MAX_GB", 50) * 2**30,
        frame_cache_max_bytes=_positive_int(env, "FARM_FRAME_CACHE_GB", 10, minimum=0) * 2**30,
        blob_ttl_days=_positive_float(env, "FARM_BLOB_TTL_DAYS", 30.0),
        retention_days=_positive_float(env, "FARM_RETENTION_DAYS", 0.0) or None,
        multipart_abort_hours=_positive_float(env, "FARM_MULTIPART_ABORT_HOURS", 24.0),
        schema_wait_seconds=_positive_float(env, "FARM_SCHEMA_WAIT_SECONDS", 300.0),
        preview_ttl_hours=_positive_float(env, "FARM_PREVIEW_TTL_HOURS", 24.0),
        min_free_bytes=int(_positive_float(env, "FARM_MIN_FREE_GB", 2.0) * 2**30),
        heartbeat_seconds=_positive_float(env, "FARM_HEARTBEAT_SECONDS", 5.0),
        worker_timeout_seconds=_positive_float(env, "FARM_WORKER_TIMEOUT_SECONDS", 30.0),
        probe_timeout_seconds=_positive_float(env, "FARM_PROBE_TIMEOUT_SECONDS", 120.0),
        frame_timeout_seconds=_positive_float(env, "FARM_FRAME_TIMEOUT_SECONDS", 4 * 3600.0),
        chunk_attempts=_positive_int(env, "FARM_CHUNK_ATTEMPTS", 3),
        packaging_attempts=_positive_int(env, "FARM_PACKAGING_ATTEMPTS", 5),
        packaging_soft_seconds=packaging_soft,
        packaging_hard_seconds=packaging_hard,
        blocklist_failures=_positive_int(env, "FARM_BLOCKLIST_FAILURES", 3),
        janitor_seconds=_positive_float(env, "FARM_JANITOR_SECONDS", 10.0),
        worker_db_connections=_positive_int(env, "FARM_WORKER_DB_CONNECTIONS", 1, minimum=0),
        visibility_seconds=_positive_float(env, "FARM_BROKER_VISIBILITY_SECONDS", 6 * 3600.0),
        warm_blender=_flag(env, "FARM_WARM_BLENDER", True),
        warm_max_chunks=_positive_int(env, "FARM_WARM_MAX_CHUNKS", 50),
        warm_max_bytes=_positive_int(env, "FARM_WARM_MAX_MB", 8192) * 2**20,
        chunk_target_seconds=_positive_float(env, "FARM_CHUNK_TARGET_SECONDS", 60.0),
        probe_frame_seconds=_positive_float(env, "FARM_PROBE_FRAME_SECONDS", 10.0),
        probe_spare=_flag(env, "FARM_PROBE_SPARE", True),
        renderer=_renderer(env),
        blender_max_memory_mb=_positive_int(env, "FARM_BLENDER_MAX_MEMORY_MB", 0, minimum=0),
        blender_nice=min(19, _positive_int(env, "FARM_BLENDER_NICE", 0, minimum=0)),
        trusted_scripts=_flag(env, "FARM_TRUSTED_SCRIPTS", False),
        web_threads=_positive_int(env, "FARM_WEB_THREADS", 32),
        https=_flag(env, "FARM_HTTPS", False),
        webhook_url=_webhook_url(env),
        webhook_secret=env.get("FARM_WEBHOOK_SECRET", ""),
        webhook_allow_private=_flag(env, "FARM_WEBHOOK_ALLOW_PRIVATE", False),
        webhook_backoff_seconds=_positive_float(env, "FARM_WEBHOOK_BACKOFF_SECONDS", 10.0),
        webhook_retry_seconds=_positive_float(env, "FARM_WEBHOOK_RETRY_SECONDS", 3600.0),
        metrics_port=min(65535, _positive_int(env, "FARM_METRICS_PORT", 0, minimum=0)),
        user_max_active_jobs=_optional_limit(env, "FARM_USER_MAX_ACTIVE_JOBS"),
        user_max_queued_frames=_optional_limit(env, "FARM_USER_MAX_QUEUED_FRAMES"),
        submit_limit=_rate(env, "FARM_SUBMIT_LIMIT", "120 per minute"),
        login_limit=_rate(env, "FARM_LOGIN_LIMIT", "30 per minute"),
    )
