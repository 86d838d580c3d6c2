"""Does each part the farm depends on answer? Used by `farm check`; each check says what it tried."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

from kombu import Connection
from sqlalchemy import text

from farm.blender.launcher import SCRIPTS, blender_command, run_script
from farm.celery_app import broker_options
from farm.config import Settings
from farm.db import make_engine
from farm.schema import SchemaNotReady, revision
from farm.storage import open_storage


def _database(settings: Settings) -> str:
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return f"{engine.dialect.name} answers"
    finally:
        engine.dispose()


def _schema(settings: Settings) -> str:
    """Fails while the database is not at this code's revision: workers would wait, and the web app upgrade."""
    engine = make_engine(settings.database_url)
    try:
        state = revision(engine)
    finally:
        engine.dispose()
    if not state.ready:
        raise SchemaNotReady(f"the database is {state.describe()}")
    return f"the database is {state.describe()}"


def _broker(settings: Settings) -> str:
    with Connection(settings.broker_url, transport_options=broker_options(settings), connect_timeout=5) as conn:
        conn.ensure_connection(max_retries=1)
        return f"{conn.transport_cls} answers"


def _storage(settings: Settings) -> str:
    storage = open_storage(settings)
    storage.ensure_ready()
    key = f"health/{uuid.uuid4()}"
    storage.put_bytes(key, b"ok")
    try:
        assert storage.read_bytes(key) == b"ok"
    finally:
        storage.delete_prefix("health")
    return f"{storage.url_prefix} is writable"


def _blender(settings: Settings) -> str:
    argv = blender_command(settings, SCRIPTS / "version.py", [])
    events = run_script(settings, SCRIPTS / "version.py", [], timeout=120)
    version = next((e["blender"] for e in events if e.get("event") == "version"), "?")
    return f"Blender {version} via {argv[0]}"


CHECKS: list[tuple[str, Callable[[Settings], str]]] = [
    ("database", _database),
    ("schema", _schema),
    ("broker", _broker),
    ("storage", _storage),
    ("blender", _blender),
]


def run_checks(settings: Settings) -> Iterator[tuple[str, bool, str]]:
    for name, check in CHECKS:
        try:
            yield name, True, check(settings)
        except Exception as exc:  # every failure is reported, none stops the others
            yield name, False, f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
