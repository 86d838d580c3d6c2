"""Sends the webhook deliveries the outbox wrote: at once after the commit that ended a job (a thread of the
process that ended it), and whatever is due again at every janitor sweep — retries of a failed delivery, with
backoff (FARM_WEBHOOK_BACKOFF_SECONDS, doubling), until FARM_WEBHOOK_RETRY_SECONDS after the job ended.

Each attempt is recorded on its row (time, status code or error, duration), which the job's API and page show.
A delivery is claimed before it is sent, by moving its `next_attempt_at` past a lease (compare-and-set on the
database's clock), so any number of processes may run couriers without sending one attempt twice.

The body is signed with FARM_WEBHOOK_SECRET: `X-Farm-Signature: sha256=<hex HMAC-SHA256 of the body>`, so a
receiver can tell the farm's POSTs from anyone else's. The connection goes to the address that was checked
(`addresses.resolve`), with the URL's host name in the Host header and TLS's SNI and certificate check.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update

from farm import metrics
from farm.clock import aware, database_now
from farm.config import Settings
from farm.db import Database
from farm.jobs.representation import iso
from farm.models import WebhookDelivery, WebhookStatus
from farm.webhooks import addresses, outbox

log = logging.getLogger(__name__)
TIMEOUT_SECONDS = 10.0
LEASE = timedelta(seconds=60)  # a claimed delivery is due again after this if its sender died mid-attempt
BATCH = 20
USER_AGENT = "farm-webhooks/1"


def sign(body: bytes, secret: str) -> str:
    """The X-Farm-Signature header's value."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(url: str, body: bytes, headers: dict[str, str], *, allow_private: bool) -> int:
    """POST `body` to `url` on the address the check passed; the response's status code. Redirects are not
    followed (a 3xx is a failed attempt): a redirect could lead anywhere, the checked address included."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = addresses.resolve(url, allow_private=allow_private)[0]
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=TIMEOUT_SECONDS, context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT_SECONDS)

    def pinned(_: Any, timeout: float | None = TIMEOUT_SECONDS, source: Any = None) -> socket.socket:
        return socket.create_connection((address, port), timeout, source)

    conn._create_connection = pinned  # type: ignore[attr-defined]  # http.client's own seam for the socket
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read(65536)
        return response.status
    finally:
        conn.close()


@dataclass(frozen=True)
class Attempt:
    delivery_id: int
    status_code: int | None
    error: str | None
    ms: float

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def attempt(delivery: WebhookDelivery, settings: Settings) -> Attempt:
    """One POST of the delivery's body; never raises."""
    data = delivery.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Farm-Event": delivery.event,
        "X-Farm-Delivery": str(delivery.id),
    }
    if settings.webhook_secret:
        headers["X-Farm-Signature"] = sign(data, settings.webhook_secret)
    # the operator's own FARM_WEBHOOK_URL may be internal; a user's notify_url is held to public addresses
    allow_private = settings.webhook_allow_private or delivery.target == "farm"
    started = time.monotonic()
    status_code: int | None = None
    error: str | None = None
    try:
        status_code = post(delivery.url, data, headers, allow_private=allow_private)
        if not 200 <= status_code < 300:
            error = f"the receiver answered {status_code}"
    except addresses.Refused as exc:
        error = f"refused: {exc}"
    except (OSError, http.client.HTTPException, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    return Attempt(delivery.id, status_code, error, round((time.monotonic() - started) * 1000, 1))


def claim_due(db: Database, *, limit: int = BATCH) -> list[WebhookDelivery]:
    """Deliveries due now, each claimed for this process by moving its next attempt a lease ahead."""
    claimed = []
    with db.session() as session:
        now = database_now(session)
        due = session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.status == WebhookStatus.PENDING, WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        ).all()
        for delivery in due:
            taken = session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery.id,
                    WebhookDelivery.status == WebhookStatus.PENDING,
                    WebhookDelivery.next_attempt_at == delivery.next_attempt_at,
                )
                .values(next_attempt_at=now + LEASE)
            ).rowcount
            if taken:
                claimed.append(delivery)
    return claimed


def next_attempt(created_at: datetime, now: datetime, attempts: int, settings: Settings) -> datetime | None:
    """When to try again after `attempts` failed ones, or None once that would be past the retry window."""
    when = now + timedelta(seconds=settings.webhook_backoff_seconds * 2 ** (attempts - 1))
    give_up = aware(created_at) + timedelta(seconds=settings.webhook_retry_seconds)
    return when if when <= give_up else None


def record(db: Database, delivery: WebhookDelivery, result: Attempt, settings: Settings) -> str:
    """Append the attempt to the delivery's row and schedule what follows; the delivery's status now."""
    with db.session() as session:
        now = database_now(session)
        row = session.get(WebhookDelivery, delivery.id, with_for_update=True)
        if row is None:  # the job was deleted meanwhile
            return "gone"
        entry = {"at": iso(now), "status_code": result.status_code, "error": result.error, "ms": result.ms}
        row.attempts = [*row.attempts, entry]
        if result.ok:
            row.status, row.delivered_at, row.next_attempt_at = WebhookStatus.DELIVERED, now, None
        else:
            row.next_attempt_at = next_attempt(row.created_at, now, len(row.attempts), settings)
            if row.next_attempt_at is None:
                row.status = WebhookStatus.FAILED
        return row.status


def deliver_due(db: Database, settings: Settings) -> int:
    """Send every delivery due now (in batches); how many attempts were made."""
    made = 0
    while batch := claim_due(db):
        for delivery in batch:
            result = attempt(delivery, settings)
            status = record(db, delivery, result, settings)
            outcome = "delivered" if result.ok else "given_up" if status == WebhookStatus.FAILED else "failed"
            metrics.WEBHOOK_ATTEMPTS.labels(outcome=outcome).inc()
            if not result.ok:
                log.warning(
                    "webhook %s of job %s to %s: %s", delivery.event, delivery.job_id, delivery.target, result.error
                )
            made += 1
    return made


class Courier:
    """One thread per process that sends due deliveries whenever it is woken (after a commit that wrote some, or
    by the janitor), and otherwise sleeps: no process polls the database for webhooks on its own."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._db: Database | None = None

    def wake(self) -> None:
        with self._lock:
            if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
                self._pid, self._db = os.getpid(), None  # a forked child has neither its parent's thread nor pool
                self._thread = threading.Thread(target=self._run, name="farm-webhooks", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            try:
                if self._db is None:
                    # one thread: one connection at most, and none kept where workers keep none
                    self._db = Database(self.settings.database_url, keep=min(1, self.settings.worker_db_connections))
                deliver_due(self._db, self.settings)
            except Exception:  # the database is away: the janitor's next sweep wakes this again
                log.exception("webhook deliveries failed")


_couriers: dict[str, Courier] = {}


def install(settings: Settings) -> Courier:
    """Make this process's courier and let the outbox wake it after each commit that wrote deliveries."""
    courier = _couriers["process"] = Courier(settings)
    outbox.install(settings, courier.wake)
    return courier


def wake() -> None:
    """Have this process's courier send what is due (the janitor's sweep calls this)."""
    courier = _couriers.get("process")
    if courier is not None:
        courier.wake()
