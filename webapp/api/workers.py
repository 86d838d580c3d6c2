"""Workers as the database knows them: registered devices, heartbeats, what each renders now, its pace; and the
operator's switch to disable one (it finishes its chunk and takes no more) or enable it again."""

from __future__ import annotations

import logging

from flask import Response, jsonify
from sqlalchemy import select

from farm.errors import NotFound
from farm.jobs import states
from farm.messaging.dispatch import set_worker_consuming
from farm.models import Event, Role, Worker
from webapp import auth, services
from webapp.api import bp
from webapp.api.serializers import event_json, workers_json
from webapp.extensions import db

log = logging.getLogger(__name__)


@bp.get("/workers")
def list_workers() -> Response:
    return jsonify({"workers": workers_json(db.session)})


def _set_enabled(hostname: str, enabled: bool) -> tuple[Response, int]:
    auth.require(Role.ADMIN, "enabling or disabling workers")
    worker = db.session.get(Worker, hostname)
    if worker is None:
        raise NotFound(f"worker {hostname}")
    states.set_worker_enabled(db.session, hostname, enabled, actor=auth.current_actor())
    db.session.commit()
    try:  # the fast path; the worker's heartbeat applies the database's word within seconds anyway
        set_worker_consuming(services.celery(), hostname, worker.queues, enabled)
    except Exception:
        log.warning("could not broadcast to worker %s", hostname, exc_info=True)
    return jsonify({"worker": workers_json(db.session, hostname)[0]}), 202


@bp.post("/workers/<hostname>/disable")
def disable_worker(hostname: str) -> tuple[Response, int]:
    """202; the worker finishes its current chunk, then takes no more work until enabled."""
    return _set_enabled(hostname, False)


@bp.post("/workers/<hostname>/enable")
def enable_worker(hostname: str) -> tuple[Response, int]:
    """202; a disabled worker takes work again."""
    return _set_enabled(hostname, True)


@bp.get("/workers/<hostname>/events")
def worker_events(hostname: str) -> Response:
    """A worker's trail: registered, disabled, enabled, went OFFLINE (and why), came back."""
    if db.session.get(Worker, hostname) is None:
        raise NotFound(f"worker {hostname}")
    events = db.session.scalars(
        select(Event).where(Event.kind == "worker", Event.subject == hostname).order_by(Event.id.desc()).limit(500)
    ).all()
    return jsonify({"events": [event_json(e) for e in reversed(events)]})


@bp.get("/health")
def health() -> Response:
    """Cheap liveness for load balancers and `farm demo`: the app answers and its database does too."""
    db.session.execute(db.select(1))
    return jsonify({"status": "ok"})
