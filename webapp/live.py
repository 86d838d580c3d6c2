"""Live job state for Server-Sent Events, with the database work shared by every open page.

One watcher thread per web process checks `Job.version` of every watched job in a single query twice a second;
only when a version moved does it read what changed (the job, the chunks stamped since the last look, frames
finished since then), once, and hands the same update to every subscriber of that job. A hundred open pages cost
what one does, and a subscriber holds no database connection while it waits.

The stream (`GET /api/jobs/<id>/events` with `Accept: text/event-stream`) sends a `snapshot` event first (the job,
the chunks its page shows, every finished frame of the first SHOWN_FRAMES), then `update` events carrying only
what changed, a comment every 15 s to keep proxies from closing it, and `end` once the job is COMPLETED, FAILED or
CANCELED. The page draws those frames and no more, so a job of a million frames costs a watcher and a browser what
one of SHOWN_FRAMES does; the others are in `GET /api/jobs/<id>/frames`, a page at a time.

Chunks likewise: the page shows the first SHOWN_CHUNKS and every chunk rendering or failed (at most SHOWN_CHUNKS of
those beyond), which is what a snapshot carries; an update carries those of them that changed, and the end of a
chunk beyond the first SHOWN_CHUNKS the page was shown rendering. What changed is read by the chunks' stamps
(`Chunk.job_version`, the job's version at their last change, on an index with the job): an update reads the few
chunks that changed, not the job's 10,000. The rest are in `GET /api/jobs/<id>/chunks`, a page at a time.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, Response, current_app, request, url_for
from sqlalchemy import false, func, select
from sqlalchemy.orm import Session

from farm.errors import FarmError
from farm.jobs.states import TERMINAL_JOB
from farm.models import Chunk, ChunkStatus, Frame, FrameStatus, Job
from farm.storage.previews import PREVIEWABLE
from webapp.api.serializers import chunk_json, jobs_json
from webapp.extensions import db

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
LATE_FRAME_SLACK = timedelta(minutes=2)  # workers' clocks and commit order may record a frame a little "earlier"
SHOWN_FRAMES = 5000  # a job's first frames, which its page draws as tiles and bars (and the stream carries)
SHOWN_CHUNKS = 1000  # a job's first chunks, which its page lists with every rendering or failed one
LIVE_CHUNK = (ChunkStatus.RENDERING, ChunkStatus.FAILED)  # shown wherever they are in the job


def frame_entry(row: Any) -> dict[str, Any]:
    return {"frame": row.frame, "render_time": row.render_time_ms, "worker": row.worker, "device": row.device}


def _shown(job: Job) -> Any:
    """The job's finished frames among those its page shows."""
    return (
        (Frame.job_id == job.id) & (Frame.status == FrameStatus.DONE) & (Frame.frame < job.frame_start + SHOWN_FRAMES)
    )


def _done_frames(session: Session, job: Job, since: datetime | None = None) -> list[Any]:
    query = select(Frame.frame, Frame.render_time_ms, Frame.worker, Frame.device, Frame.finished_at).where(_shown(job))
    if since is not None:
        query = query.where(Frame.finished_at >= since - LATE_FRAME_SLACK)
    return list(session.execute(query.order_by(Frame.frame)))


def _stamp(session: Session, job: Job) -> int:
    """The latest stamp of the job's chunks (from the index's last entry): read before the chunks, so a change
    committed in between is read again next time, never missed."""
    return session.scalar(select(func.max(Chunk.job_version)).where(Chunk.job_id == job.id)) or 0


def _shown_chunks(session: Session, job: Job) -> list[Chunk]:
    """The chunks a page shows: the first SHOWN_CHUNKS, then the rendering or failed ones beyond, by index."""
    first = select(Chunk).where(Chunk.job_id == job.id, Chunk.index < SHOWN_CHUNKS)
    beyond = select(Chunk).where(Chunk.job_id == job.id, Chunk.index >= SHOWN_CHUNKS, Chunk.status.in_(LIVE_CHUNK))
    return [
        *session.scalars(first.order_by(Chunk.index)),
        *session.scalars(beyond.order_by(Chunk.index).limit(SHOWN_CHUNKS)),
    ]


def _done_count(session: Session, job: Job) -> int:
    """How many of the shown frames are finished: the job's own count when it shows every frame, else counted
    (at most SHOWN_FRAMES index entries)."""
    if job.frames_to_render <= SHOWN_FRAMES:
        return job.frames_rendered
    return session.scalar(select(func.count()).where(_shown(job))) or 0


@dataclass
class JobState:
    """Everything a page shows about one job, kept by the watcher so a new subscriber costs no query."""

    job: dict[str, Any]
    chunks: dict[int, dict[str, Any]]  # those the page shows, by index
    frames: dict[int, dict[str, Any]]
    latest_finish: datetime | None
    links: dict[str, str | None]
    stamp: int  # the chunks' latest stamp when they were last read

    @classmethod
    def load(cls, session: Session, job: Job) -> JobState:
        stamp = _stamp(session, job)
        rows = _done_frames(session, job)
        return cls(
            job=jobs_json(session, [job])[0],
            chunks={c.index: chunk_json(c) for c in _shown_chunks(session, job)},
            frames={r.frame: frame_entry(r) for r in rows},
            latest_finish=max((r.finished_at for r in rows if r.finished_at), default=None),
            links=links(job),
            stamp=stamp,
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "chunks": sorted(self.chunks.values(), key=lambda c: c["index"]),
            "frames": sorted(self.frames.values(), key=lambda f: f["frame"]),
            "links": self.links,
        }

    def advance(self, session: Session, job: Job) -> dict[str, Any]:
        """Read what changed since the last look; returns the update (the job, changed chunks, new frames)."""
        self.job = jobs_json(session, [job])[0]
        changed = self._changed_chunks(session, job)
        rows = _done_frames(session, job, self.latest_finish)
        if len(self.frames) + len([r for r in rows if r.frame not in self.frames]) < _done_count(session, job):
            rows = _done_frames(session, job)  # a frame committed out of order slipped past: look at all
        new = [frame_entry(r) for r in rows if r.frame not in self.frames]
        for entry in new:
            self.frames[entry["frame"]] = entry
        finishes = [r.finished_at for r in rows if r.finished_at]
        if finishes:
            self.latest_finish = max([*finishes, *([self.latest_finish] if self.latest_finish else [])])
        return {"job": self.job, "chunks": changed, "frames": new}

    def _changed_chunks(self, session: Session, job: Job) -> list[dict[str, Any]]:
        """The shown chunks stamped since the last look, by index; one beyond the first SHOWN_CHUNKS that is no
        longer rendering or failed is sent once more (its end) and then left out of later snapshots."""
        stamp = _stamp(session, job)
        if stamp <= self.stamp:
            return []
        beyond = [index for index in self.chunks if index >= SHOWN_CHUNKS]
        rows = session.scalars(
            select(Chunk)
            .where(Chunk.job_id == job.id, Chunk.job_version > self.stamp, Chunk.job_version <= stamp)
            .where(
                (Chunk.index < SHOWN_CHUNKS)
                | Chunk.status.in_(LIVE_CHUNK)
                | (Chunk.index.in_(beyond) if beyond else false())
            )
            .order_by(Chunk.index)
        )
        self.stamp = stamp
        changed = []
        for chunk in rows:
            fresh = chunk_json(chunk)
            if self.chunks.get(chunk.index) == fresh:
                continue
            changed.append(fresh)
            if chunk.index < SHOWN_CHUNKS or chunk.status in LIVE_CHUNK:
                self.chunks[chunk.index] = fresh
            else:
                self.chunks.pop(chunk.index, None)
        return changed


def links(job: Job) -> dict[str, str | None]:
    """URL templates (`{frame}`, `{index}`) for what the page or a script fetches next, in the page's own origin."""
    frame = url_for("api.job_frame", job_id=job.id, frame=0).removesuffix("/0")
    return {
        "frame": frame + "/{frame}",
        "thumbnail": frame + "/{frame}/thumbnail" if job.output_format in PREVIEWABLE else None,
        "log": url_for("api.chunk_log", job_id=job.id, index=0).removesuffix("/0/log") + "/{index}/log",
        "asset": url_for("api.job_asset", job_id=job.id),
    }


class TooManyStreams(FarmError):
    """Every thread a live stream may hold is taken; the page falls back to polling the JSON API."""

    status = 503

    def __init__(self, limit: int) -> None:
        super().__init__(
            None, "too_many_streams", f"this web process already serves {limit} live streams; poll instead"
        )


@dataclass(eq=False)
class Subscriber:
    inbox: queue.Queue[tuple[str, dict[str, Any], int]] = field(default_factory=queue.Queue)
    has_snapshot: bool = False


@dataclass
class Watched:
    subscribers: set[Subscriber] = field(default_factory=set)
    state: JobState | None = None
    version: int = -1


class JobWatcher:
    """The per-process thread that polls job versions for every open stream and fans updates out."""

    def __init__(self, app: Flask, interval: float = POLL_SECONDS) -> None:
        self.app, self.interval = app, interval
        self.lock = threading.Lock()
        self.watched: dict[tuple[str, str], Watched] = {}  # by (job id, base URL the clients use)
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        self.polls = 0  # version queries made, for tests and curiosity

    def subscribe(self, job_id: str, base_url: str, limit: int) -> Subscriber:
        """Add a subscriber, unless `limit` streams are open already: each holds a web thread until it ends."""
        sub = Subscriber()
        with self.lock:
            if sum(len(w.subscribers) for w in self.watched.values()) >= limit:
                raise TooManyStreams(limit)
            watched = self.watched.setdefault((job_id, base_url), Watched())
            watched.subscribers.add(sub)
            if watched.state is not None:
                self._send_snapshot(watched, sub)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="farm-job-watcher", daemon=True)
                self.thread.start()
        self.wake.set()
        return sub

    def unsubscribe(self, job_id: str, base_url: str, sub: Subscriber) -> None:
        with self.lock:
            watched = self.watched.get((job_id, base_url))
            if watched is not None:
                watched.subscribers.discard(sub)
                if not watched.subscribers:
                    del self.watched[(job_id, base_url)]

    def _send_snapshot(self, watched: Watched, sub: Subscriber) -> None:
        assert watched.state is not None
        sub.inbox.put(("snapshot", watched.state.snapshot(), watched.version))
        sub.has_snapshot = True
        if watched.state.job["status"] in TERMINAL_JOB:
            sub.inbox.put(("end", {"status": watched.state.job["status"]}, watched.version))

    def _run(self) -> None:
        while True:
            self.wake.wait(self.interval)
            self.wake.clear()
            try:
                self.tick()
            except Exception:  # a database outage: keep the streams open and look again
                log.warning("job watcher could not poll", exc_info=True)

    def tick(self) -> None:
        with self.lock:
            keys = list(self.watched)
        if not keys:
            return
        with self.app.app_context():
            self.polls += 1
            wanted = sorted({job_id for job_id, _ in keys})
            rows = db.session.execute(select(Job.id, Job.version).where(Job.id.in_(wanted)))
            versions = {job_id: version for job_id, version in rows}
        for key in keys:
            with self.lock:
                watched = self.watched.get(key)
            if watched is None or key[0] not in versions:
                continue
            if versions[key[0]] != watched.version or watched.state is None:
                self._refresh(key, watched, versions[key[0]])
            with self.lock:
                for sub in watched.subscribers:
                    if not sub.has_snapshot:
                        self._send_snapshot(watched, sub)

    def _refresh(self, key: tuple[str, str], watched: Watched, version: int) -> None:
        job_id, base_url = key
        with self.app.test_request_context(base_url=base_url):
            job = db.session.get(Job, job_id)
            if job is None:
                return
            if watched.state is None:
                state, update = JobState.load(db.session, job), None
            else:
                state, update = watched.state, watched.state.advance(db.session, job)
        with self.lock:
            watched.state, watched.version = state, version
            if update is None:
                return
            ended = state.job["status"] in TERMINAL_JOB
            for sub in watched.subscribers:
                if sub.has_snapshot:
                    sub.inbox.put(("update", update, version))
                    if ended:
                        sub.inbox.put(("end", {"status": state.job["status"]}, version))


_watchers: dict[int, JobWatcher] = {}
_watchers_lock = threading.Lock()


def watcher(app: Flask) -> JobWatcher:
    """This process's watcher (keyed by pid: a forked web worker starts its own thread)."""
    key = os.getpid()
    with _watchers_lock:
        found = app.extensions.get("farm.watcher")
        if found is None or _watchers.get(key) is not found:
            found = app.extensions["farm.watcher"] = _watchers[key] = JobWatcher(app)
        return found


def sse(kind: str, data: dict[str, Any], event_id: int) -> str:
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def stream(job_id: str) -> Response:
    """The job's live stream; the request's database session is released before the first byte is sent."""
    hub = watcher(current_app._get_current_object())  # type: ignore[attr-defined]
    base_url = request.host_url
    sub = hub.subscribe(job_id, base_url, current_app.extensions["farm"].max_streams)

    def events() -> Iterator[str]:
        try:
            yield "retry: 3000\n\n"
            while True:
                try:
                    kind, data, version = sub.inbox.get(timeout=KEEPALIVE_SECONDS)
                except queue.Empty:
                    yield ": keepalive\n\n"
                    continue
                yield sse(kind, data, version)
                if kind == "end":
                    return
        finally:
            hub.unsubscribe(job_id, base_url, sub)

    return Response(
        events(),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def wants_stream() -> bool:
    """Scripts asking for JSON (or for nothing in particular) get JSON; EventSource asks for text/event-stream."""
    accept = request.accept_mimetypes
    return accept["text/event-stream"] > accept["application/json"] and "text/event-stream" in accept.values()
