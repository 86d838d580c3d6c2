"""The farm's store of project files, by content: which blobs it holds (a `blobs` row for each object under
`blobs/<sha256>` in storage), taking new ones in verified, recording which jobs use which, and forgetting those no
job has used for FARM_BLOB_TTL_DAYS. Blobs are shared across jobs and users: a file is stored once.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path

from sqlalchemy import delete, exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from farm.config import Settings
from farm.errors import Unprocessable, ValidationError
from farm.models import Job, JobBlob, JobStatus, StoredBlob, utcnow
from farm.projects import Blob, BlobCache, Manifest, blob_key, hash_stream
from farm.storage import Storage

log = logging.getLogger(__name__)
FINAL = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED)


def missing(session: Session, blobs: Iterable[Blob]) -> list[Blob]:
    """Those of `blobs` the farm does not hold yet, in the order asked, each once."""
    wanted = list(dict.fromkeys(blobs))
    held: set[tuple[str, int]] = set()
    shas = [b.sha256 for b in wanted]
    for i in range(0, len(shas), 1000):
        rows = session.execute(
            select(StoredBlob.sha256, StoredBlob.size).where(StoredBlob.sha256.in_(shas[i : i + 1000]))
        )
        held.update((sha, size) for sha, size in rows)
    return [b for b in wanted if (b.sha256, b.size) not in held]


def adopt(session: Session, storage: Storage, settings: Settings, path: Path, blob: Blob) -> bool:
    """Store a file whose hash was computed here; False when the farm held it already (nothing is sent). It also
    goes into this machine's blob cache, so the submission's probe does not download it back."""
    BlobCache(settings.cache_dir).adopt(path, blob)
    if session.get(StoredBlob, blob.sha256) is not None:
        return False
    storage.put_file(blob_key(blob.sha256), path)
    try:
        with session.begin_nested():
            session.add(StoredBlob(sha256=blob.sha256, size=blob.size))
    except IntegrityError:  # the same bytes arrived at once in another request, which recorded them first
        return False
    return True


def receive(session: Session, storage: Storage, settings: Settings, sha256: str, body: Iterator[bytes]) -> bool:
    """`PUT /api/files/<sha256>`: hash the body as it arrives and store it only when it is what it claims to be.
    Returns whether it was new."""
    tmp_dir = settings.instance_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="blob-", dir=tmp_dir)
    os.close(fd)
    try:
        try:
            blob = hash_stream(body, Path(name), settings.max_upload_bytes)
        except OverflowError:
            raise ValidationError(
                "file", "too_large", f"a file is larger than {settings.max_upload_bytes // 2**20} MiB"
            ) from None
        if blob.sha256 != sha256:
            raise Unprocessable(
                "file",
                "checksum_mismatch",
                f"the body's sha256 is {blob.sha256} ({blob.size} bytes), not the {sha256} it was sent as",
            )
        return adopt(session, storage, settings, Path(name), blob)
    finally:
        Path(name).unlink(missing_ok=True)


def require(session: Session, manifest: Manifest) -> None:
    """422 `missing_blobs` listing the manifest's files the farm does not hold yet."""
    lacking = missing(session, manifest.files.values())
    if lacking:
        raise Unprocessable(
            "manifest",
            "missing_blobs",
            f"{len(lacking)} of the project's files are not uploaded yet: PUT /api/files/<sha256> each, then submit",
            missing=[{"sha256": b.sha256, "size": b.size} for b in lacking],
        )


def use(session: Session, job_id: str, shas: Iterable[str]) -> None:
    """The job uses these blobs: they are kept while it is active and for FARM_BLOB_TTL_DAYS after."""
    unique = sorted(set(shas))
    session.add_all(JobBlob(job_id=job_id, sha256=sha) for sha in unique)
    for i in range(0, len(unique), 1000):
        session.execute(
            update(StoredBlob).where(StoredBlob.sha256.in_(unique[i : i + 1000])).values(last_used_at=utcnow())
        )


def expire(session: Session, storage: Storage, ttl_days: float, limit: int = 500) -> list[str]:
    """Delete blobs no job has used for `ttl_days`, except those an active job still renders from."""
    cutoff = utcnow() - timedelta(days=ttl_days)
    in_use = (
        select(JobBlob.sha256)
        .join(Job, Job.id == JobBlob.job_id)
        .where(JobBlob.sha256 == StoredBlob.sha256, Job.status.not_in(FINAL))
    )
    stale = session.scalars(
        select(StoredBlob.sha256)
        .where(StoredBlob.last_used_at < cutoff, ~exists(in_use))
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for sha in stale:
        storage.delete(blob_key(sha))
    if stale:
        session.execute(delete(StoredBlob).where(StoredBlob.sha256.in_(stale)))
        session.execute(delete(JobBlob).where(JobBlob.sha256.in_(stale)))
    return list(stale)
