"""The frames of a finished job, fetched in order for whoever reads them all (the zip, the movie): each checked
against the sha256 recorded when it was stored, from this machine's frame cache when it kept a copy, else
downloaded, a few ahead of the reader on threads so hashing and downloads overlap what the reader does. Their rows
are read a page at a time too: a million-frame job is never held in memory, row or image.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Row, select
from sqlalchemy.orm import InstrumentedAttribute

from farm.models import Frame, FrameStatus
from farm.retrying import with_retries
from workers.context import WorkerContext

COPY_BLOCK = 1024 * 1024
PREFETCH = 4  # frames downloaded ahead of the reader
ROWS_PAGE = 10_000  # frame rows read at a time


class Unpackable(RuntimeError):
    """A frame that can never be zipped (missing from storage, or not the bytes that were rendered): no later
    attempt could do better, so the job fails at once."""


def _sha256(src: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while block := src.read(COPY_BLOCK):
        digest.update(block)
    src.seek(0)
    return digest.hexdigest()


def done_frames(ctx: WorkerContext, job_id: str, *extra: InstrumentedAttribute[Any]) -> Iterator[Row[Any]]:
    """The job's DONE frames in order, as rows of (frame, image_key, sha256, *extra), ROWS_PAGE at a time, each page
    read in a short transaction of its own (no transaction stays open while a zip is written for an hour), riding
    out a database outage between pages as the rest of the packager does."""
    after = None
    while True:
        query = select(Frame.frame, Frame.image_key, Frame.sha256, *extra).where(
            Frame.job_id == job_id, Frame.status == FrameStatus.DONE
        )
        if after is not None:
            query = query.where(Frame.frame > after)

        def read(query: Any = query) -> list[Row[Any]]:
            with ctx.db.session() as session:
                return list(session.execute(query.order_by(Frame.frame).limit(ROWS_PAGE)))

        page = with_retries(read, what=f"reading the frames of job {job_id}")
        yield from page
        if len(page) < ROWS_PAGE:
            return
        after = page[-1].frame


def fetched(ctx: WorkerContext, frames: Iterable[Row[Any]], folder: Path) -> Iterator[tuple[Row[Any], IO[bytes]]]:
    """Each frame row with its image open for reading and checked against the sha256 recorded when it was stored,
    in order. A copy this machine kept when it rendered the frame is used as it is; the others are downloaded.
    PREFETCH frames are fetched and checked ahead of the zip writer, on threads (hashing and downloads overlap the
    zip's upload), so only PREFETCH copies are ever open."""
    scratch = Path(tempfile.mkdtemp(prefix="frames-", dir=folder))

    def fetch(row: Row[Any]) -> IO[bytes]:
        frame, key, sha256 = row[:3]
        kept = ctx.frames.open(sha256)
        if kept is not None:
            if _sha256(kept) == sha256:
                return kept
            kept.close()
            ctx.frames.drop([sha256])
        path = scratch / str(frame)
        try:
            ctx.storage.get_file(key, path)
        except FileNotFoundError:
            raise Unpackable(f"frame {frame} is missing from storage ({key})") from None
        with ExitStack() as closing:  # closed if it does not check out
            src = closing.enter_context(open(path, "rb"))
            path.unlink()  # the open file outlives its name: nothing is left on disk once it is closed
            if _sha256(src) != sha256:
                raise Unpackable(f"frame {frame} in storage does not match its recorded sha256")
            closing.pop_all()
        return src

    pool = ThreadPoolExecutor(PREFETCH, thread_name_prefix="frame-fetch")
    rows = iter(frames)
    pending = deque((row, pool.submit(fetch, row)) for row in itertools.islice(rows, PREFETCH))
    try:
        while pending:
            row, future = pending.popleft()
            src = future.result()
            pending.extend((ahead, pool.submit(fetch, ahead)) for ahead in itertools.islice(rows, 1))
            with src:
                yield row, src
    finally:
        # Fetches still running are not waited for: a download stalled on a hung storage must not hold up the end
        # of an attempt that failed or hit its soft time limit. Each copy is closed whenever its fetch ends.
        for _, future in pending:
            future.add_done_callback(_close_fetched)
        pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _close_fetched(future: Future[IO[bytes]]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()
