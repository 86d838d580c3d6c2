"""The database's schema, versioned with Alembic (`farm/migrations/`): the web app upgrades it at start, workers wait
for the revision their code was written for, and `farm db` / `farm check` show where a database stands.

Web processes, workers and CLIs may start at once against one database, so an upgrade runs in one transaction that
first takes a lock: a Postgres advisory lock, or SQLite's write lock (every transaction there begins IMMEDIATE, see
`farm.db`). Whoever waits for it then finds the work done. Postgres DDL is transactional, so a failed upgrade leaves
the database at the revision it was.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, inspect, text

from farm.models import Base

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
LOCK_KEY = 72177001  # the advisory lock every upgrade takes on Postgres
BASELINE = "0001"  # the schema `create_all` made before migrations existed


def _not_chatter(record: logging.LogRecord) -> bool:
    """Alembic says which dialect it drives every time it reads the revision: a waiting worker would log it each
    second. What it migrates is still logged."""
    return not str(record.msg).startswith(("Context impl", "Will assume"))


logging.getLogger("alembic.runtime.migration").addFilter(_not_chatter)


class SchemaNotReady(RuntimeError):
    """The database is not at the revision this code needs (and did not get there in time)."""


@dataclass(frozen=True)
class Revision:
    """Where a database stands against this code's migrations."""

    current: str | None
    head: str
    known: bool  # whether this code has the current revision (not the case for one made by newer code)

    @property
    def ready(self) -> bool:
        return self.current == self.head

    def describe(self) -> str:
        if self.ready:
            return f"at revision {self.head} (current)"
        if not self.known:
            return f"at revision {self.current}, which this farm's code does not know (newer code upgraded it)"
        return f"at revision {self.current or 'none (empty)'}; this code needs {self.head}: run `farm db upgrade`"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def revision(engine: Engine) -> Revision:
    directory = scripts()
    with engine.connect() as conn:
        current = _current(conn)
    known = current is None or _known(directory, current)
    return Revision(current=current, head=directory.get_current_head() or "", known=known)


def _known(directory: ScriptDirectory, rev: str) -> bool:
    try:
        return directory.get_revision(rev) is not None
    except Exception:  # alembic raises its own errors for a revision it has no script for
        return False


def upgrade(engine: Engine, target: str = "head") -> tuple[str | None, str | None]:
    """Upgrade to `target` under the migration lock; returns the revisions before and after. A database whose
    tables were made by `create_all` before migrations existed is first recorded as the baseline revision."""
    with engine.connect() as conn, _foreign_keys_off(conn), conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        before = _current(conn)
        config = alembic_config(conn)
        if before is None and inspect(conn).has_table("jobs"):
            log.info("the database has the farm's tables but no revision: recording them as revision %s", BASELINE)
            command.stamp(config, BASELINE)
        command.upgrade(config, target)
        after = _current(conn)
    if before != after:
        log.info("database schema upgraded from %s to %s", before or "empty", after)
    return before, after


@contextmanager
def _foreign_keys_off(conn: Connection) -> Iterator[None]:
    """On SQLite, foreign keys are off while migrations run: a batch migration copies a table and drops the old
    one, and with them on, dropping `jobs` would delete every row that references it (ON DELETE CASCADE). SQLite
    only changes this outside a transaction, so it goes straight to the driver's connection."""
    if conn.dialect.name != "sqlite":
        yield
        return
    driver = conn.connection.driver_connection
    driver.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        driver.execute("PRAGMA foreign_keys=ON")


def wait_until_ready(engine: Engine, timeout: float, *, poll: float = 1.0, who: str = "this process") -> Revision:
    """Block until the database is at this code's head revision (the web app upgrades it at start), logging why
    once and then every 30 s; SchemaNotReady after `timeout` seconds, or at once for a revision this code does
    not know."""
    deadline = time.monotonic() + timeout
    next_log = 0.0
    while True:
        try:
            state = revision(engine)
        except Exception as exc:  # the database itself may still be starting
            state, problem = None, f"the database does not answer ({type(exc).__name__}: {exc})".splitlines()[0]
        else:
            if state.ready:
                return state
            if not state.known:
                raise SchemaNotReady(f"the database is {state.describe()}: upgrade the farm on this machine")
            problem = f"the database is {state.describe()}"
        if time.monotonic() >= deadline:
            raise SchemaNotReady(f"{problem}; gave up after waiting {timeout:g} s")
        if time.monotonic() >= next_log:
            log.warning("%s waits for the database schema: %s (the web app upgrades it at start)", who, problem)
            next_log = time.monotonic() + 30
        time.sleep(poll)


def new_revision(message: str) -> Path:
    """Write the next migration for what `farm/models.py` declares beyond the latest revision (Alembic's
    autogenerate against a scratch SQLite database brought to head), numbered after it; read it before committing."""
    head = scripts().get_current_head() or "0000"
    with tempfile.TemporaryDirectory() as scratch:
        engine = create_engine(f"sqlite:///{scratch}/schema.sqlite")
        try:
            upgrade(engine)
            with engine.begin() as conn:
                script = command.revision(
                    alembic_config(conn), message=message, autogenerate=True, rev_id=f"{int(head) + 1:04d}"
                )
        finally:
            engine.dispose()
    assert script is not None and not isinstance(script, list)
    return Path(script.path)


def differences(engine: Engine) -> list[object]:
    """What the models declare that the database lacks or has otherwise (Alembic's autogenerate comparison):
    empty when the migrations and `farm/models.py` agree."""
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))
