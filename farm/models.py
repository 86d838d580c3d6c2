"""The farm's tables: the database is the single source of truth for jobs, chunks, frames and workers.

Statuses are written only through `farm.jobs.states`; everything else here is plain data.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """This machine's clock: for what is only shown (events, task history), never for judging who is alive."""
    return datetime.now(UTC)


class JobStatus(enum.StrEnum):
    QUEUED = "QUEUED"
    RENDERING = "RENDERING"
    PACKAGING = "PACKAGING"
    UPLOADING = "UPLOADING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"


class ChunkStatus(enum.StrEnum):
    QUEUED = "QUEUED"
    RENDERING = "RENDERING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


class FrameStatus(enum.StrEnum):
    QUEUED = "QUEUED"
    RENDERING = "RENDERING"
    DONE = "DONE"
    FAILED = "FAILED"


class WorkerStatus(enum.StrEnum):
    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"
    DISABLED = "DISABLED"


class Role(enum.StrEnum):
    """Each role may do what the one before it may, and more (`farm.users.ROLE_RANK`)."""

    VIEWER = "viewer"
    ARTIST = "artist"
    ADMIN = "admin"


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {datetime: DateTime(timezone=True), dict[str, Any]: JSON, list[Any]: JSON}


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED, index=True)
    owner: Mapped[str | None] = mapped_column(String(200), index=True)  # the submitting user's name
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    # Bumped on every change to the job, its chunks or frames, so watchers need one cheap query.
    version: Mapped[int] = mapped_column(Integer, default=0)

    source_key: Mapped[str] = mapped_column(String(300))
    source_sha256: Mapped[str] = mapped_column(String(64))
    source_kind: Mapped[str] = mapped_column(String(8))  # "blend" or "zip"
    main: Mapped[str | None] = mapped_column(String(500))  # the .blend inside a zip project
    scene: Mapped[dict[str, Any]] = mapped_column(default=dict)  # what the probe read from the file

    frame_start: Mapped[int] = mapped_column(Integer)
    frame_end: Mapped[int] = mapped_column(Integer)
    chunk_size: Mapped[int] = mapped_column(Integer)
    engine: Mapped[str | None] = mapped_column(String(32))
    samples: Mapped[int | None] = mapped_column(Integer)
    resolution_x: Mapped[int | None] = mapped_column(Integer)
    resolution_y: Mapped[int | None] = mapped_column(Integer)
    resolution_percentage: Mapped[int | None] = mapped_column(Integer)
    output_format: Mapped[str] = mapped_column(String(16))
    device: Mapped[str] = mapped_column(String(8))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    queue: Mapped[str] = mapped_column(String(200), default="farm")  # the broker queue its tasks go to
    preview: Mapped[bool] = mapped_column(default=False)  # a quick look: quarter size, few samples, expires
    preview_movie: Mapped[bool] = mapped_column(default=True)  # make an MP4 of the frames when it is packaged
    # Parts one still is rendered in by several workers and merged (farm.jobs.splitting); 1: not split.
    split: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

    worker_host: Mapped[str | None] = mapped_column(String(200))
    # Kept by `states.frame_done` in the same statement that marks a frame DONE, so they are exact and cheap.
    frames_rendered: Mapped[int] = mapped_column(Integer, default=0)
    render_ms_total: Mapped[float] = mapped_column(Float, default=0.0)
    latest_frame: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    asset_key: Mapped[str | None] = mapped_column(String(500))
    asset_filename: Mapped[str | None] = mapped_column(String(300))
    asset_size: Mapped[int | None] = mapped_column(BigInteger)
    # Set by a delete (a user's, or retention's): the job is gone for users at once, and its files and rows go
    # once nothing of it runs any more (`farm.jobs.deletion`).
    deleted_at: Mapped[datetime | None] = mapped_column(index=True)
    # Bytes under the job's storage prefix (frames, thumbnails, logs, zip, movie), as the janitor last measured.
    storage_bytes: Mapped[int | None] = mapped_column(BigInteger)
    storage_measured_at: Mapped[datetime | None]
    notify_url: Mapped[str | None] = mapped_column(Text)  # POSTed the job's end (see farm.webhooks)
    movie_key: Mapped[str | None] = mapped_column(String(500))
    movie_filename: Mapped[str | None] = mapped_column(String(300))
    movie_size: Mapped[int | None] = mapped_column(BigInteger)

    chunks: Mapped[list[Chunk]] = relationship(back_populates="job", order_by="Chunk.index", cascade="all")

    @property
    def frames_to_render(self) -> int:
        return self.frame_end - self.frame_start + 1

    def render_settings(self) -> dict[str, object]:
        """What Blender is told to override in the scene: the worker's chunk spec, and JOB's `settings`."""
        return {
            "engine": self.engine,
            "samples": self.samples,
            "resolution_x": self.resolution_x,
            "resolution_y": self.resolution_y,
            "resolution_percentage": self.resolution_percentage,
            "output_format": self.output_format,
            "device": self.device,
        }


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (
        UniqueConstraint("job_id", "index"),
        Index("ix_chunks_job_status", "job_id", "status"),
        Index("ix_chunks_status_worker", "status", "worker"),  # what each worker renders now
        Index("ix_chunks_job_version", "job_id", "job_version"),  # what changed since a live view last looked
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    frame_start: Mapped[int] = mapped_column(Integer)
    frame_end: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=ChunkStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    task_id: Mapped[str | None] = mapped_column(String(64), index=True)  # every claim looks its task up
    dispatched_at: Mapped[datetime | None]  # when task_id was last sent to the broker
    heartbeat_at: Mapped[datetime | None]  # the renderer's last sign of life; stale means it died
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    log_key: Mapped[str | None] = mapped_column(String(500))
    error: Mapped[str | None] = mapped_column(Text)
    # Live progress while it renders, from Blender's own output (untrusted: bounded, and only ever this chunk's):
    # the share of the frame Blender renders now (0-1), and of the whole chunk (0-100).
    frame_progress: Mapped[float] = mapped_column(Float, default=0.0)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    # A split still's part, once stored in the attempt that rendered it: its EXR's key, sha256, size, render time,
    # device, and the scene's output settings the merge applies ("recipe"). None for chunks of frames.
    part: Mapped[dict[str, Any] | None]
    # The job's `version` when something its page shows last changed here, written while the change holds the job's
    # row (`farm.jobs.states`): it grows in commit order, so a live view reads only the chunks past the last it saw.
    job_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    job: Mapped[Job] = relationship(back_populates="chunks")


class StoredBlob(Base):
    """A project file in storage (`blobs/<sha256>`), whoever uploaded it; `last_used_at` is when a job last
    named it, for the janitor's FARM_BLOB_TTL_DAYS."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class JobBlob(Base):
    """Which blobs a job's project is made of: none is deleted while a job that uses it is still active."""

    __tablename__ = "job_blobs"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class Frame(Base):
    __tablename__ = "frames"
    # A frame's row is made when its chunk is claimed (`states.make_frame_rows`). Indexes: (job, frame), which every
    # read of a job's frames ranges over, and the chunk (its frames move together; its rows cascade with it). Frames
    # are not looked up by status or worker (a worker's pace is in `worker_paces`), so a frame's update moves no
    # index entry.
    __table_args__ = (UniqueConstraint("job_id", "frame"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    chunk_id: Mapped[int] = mapped_column(ForeignKey("chunks.id", ondelete="CASCADE"), index=True)
    frame: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=FrameStatus.QUEUED)
    render_time_ms: Mapped[float | None] = mapped_column(Float)
    worker: Mapped[str | None] = mapped_column(String(200))
    device: Mapped[str | None] = mapped_column(String(200))
    image_key: Mapped[str | None] = mapped_column(String(500))
    sha256: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int | None] = mapped_column(BigInteger)
    finished_at: Mapped[datetime | None]


class Worker(Base):
    __tablename__ = "workers"

    hostname: Mapped[str] = mapped_column(String(200), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default=WorkerStatus.ONLINE)
    devices: Mapped[list[Any]] = mapped_column(default=list)
    queues: Mapped[list[Any]] = mapped_column(default=list)
    pid: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_heartbeat: Mapped[datetime] = mapped_column(default=utcnow)  # the database's clock
    clock_offset: Mapped[float | None] = mapped_column(Float)  # seconds the database's clock is ahead of the worker's
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger)  # the machine's total memory
    health: Mapped[str | None] = mapped_column(Text)  # why the worker is unwell (its disk is full), None if well


class Event(Base):
    """One row per status change: the audit trail of what changed, from what, why and by whom."""

    __tablename__ = "events"
    # A job's trail, and its chunk failures (the blocklist) found without reading the whole trail.
    __table_args__ = (Index("ix_events_job_kind_new", "job_id", "kind", "new"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(8))  # job, chunk, frame, worker
    subject: Mapped[str] = mapped_column(String(200))
    job_id: Mapped[str | None] = mapped_column(String(36))
    old: Mapped[str | None] = mapped_column(String(16))
    new: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str | None] = mapped_column(String(200))


class TaskRecord(Base):
    """One Celery task's life as its worker saw it (received, started, finished), kept so the monitor's history
    survives restarts of the web app — unlike Flower's, which lives in memory."""

    __tablename__ = "task_records"

    task_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), index=True)  # RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, ...
    worker: Mapped[str | None] = mapped_column(String(200))
    queue: Mapped[str | None] = mapped_column(String(200))
    job_id: Mapped[str | None] = mapped_column(String(36), index=True)
    chunk_id: Mapped[int | None] = mapped_column(Integer)
    args: Mapped[str | None] = mapped_column(String(500))
    retries: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime | None] = mapped_column(index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    runtime_ms: Mapped[float | None] = mapped_column(Float)
    result: Mapped[str | None] = mapped_column(Text)  # the return value, or the exception, shortened
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class FrameTally(Base):
    """Frames each renderer has recorded, ever: `farm_frames_rendered_total` must only grow, and counting the frames
    rows would drop whenever a job is deleted (Prometheus reads a drop as a restart from zero). One row per worker,
    written only by that worker's own frames, so the tally adds no lock that workers contend for."""

    __tablename__ = "frame_tallies"

    worker: Mapped[str] = mapped_column(String(200), primary_key=True)
    frames: Mapped[int] = mapped_column(BigInteger, default=0)


class WorkerPace(Base):
    """Frames each worker has recorded for a job, and their render time, summed as each is recorded: a job's ETA
    reads every rendering worker's pace from here, a row per worker, where averaging the job's frames took 25 ms for
    15,000 of them at every status poll. Written only by that worker's own frames, so workers contend for no lock."""

    __tablename__ = "worker_paces"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    worker: Mapped[str] = mapped_column(String(200), primary_key=True)
    frames: Mapped[int] = mapped_column(Integer, default=0)
    render_ms_total: Mapped[float] = mapped_column(Float, default=0.0)


class WebhookStatus(enum.StrEnum):
    PENDING = "PENDING"  # due at `next_attempt_at` (the first attempt, or a retry)
    DELIVERED = "DELIVERED"  # the receiver answered 2xx
    FAILED = "FAILED"  # still failing FARM_WEBHOOK_RETRY_SECONDS after the job ended: given up


class WebhookDelivery(Base):
    """One POST of a job's end to one receiver (the job's notify_url, or FARM_WEBHOOK_URL), written in the same
    transaction as the end itself and sent only after it commits (an outbox): a receiver never hears of an end
    that was rolled back, and a process that dies before sending leaves the row for the janitor's courier."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    target: Mapped[str] = mapped_column(String(16))  # "notify_url" or "farm" (FARM_WEBHOOK_URL)
    url: Mapped[str] = mapped_column(Text)
    event: Mapped[str] = mapped_column(String(16))  # job.completed, job.failed, job.canceled
    body: Mapped[str] = mapped_column(Text)  # the exact bytes signed and sent on every attempt
    status: Mapped[str] = mapped_column(String(16), default=WebhookStatus.PENDING)
    created_at: Mapped[datetime]  # the database's clock, as every time that schedules
    next_attempt_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    attempts: Mapped[list[Any]] = mapped_column(default=list)  # [{"at", "status_code", "error", "ms"}, ...]


class User(Base):
    """A person (or a script's account). Names never change, so jobs and events record the name itself."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16), default=Role.VIEWER)
    password_hash: Mapped[str | None] = mapped_column(String(300))  # None: API tokens only, no login form
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Bumped when the password is reset or the account disabled: sessions signed with an older one are void.
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", cascade="all, delete-orphan")


class ApiToken(Base):
    """An API token, kept only as its SHA-256 (a token is 256 random bits, so a fast hash is safe); `prefix` is its
    first characters, shown in lists so a leaked token can be matched to its row."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(back_populates="tokens")
