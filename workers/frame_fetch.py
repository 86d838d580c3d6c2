"""The frames of a finished job, fetched in order for whoever reads them all (the zip, the movie): each checked
against the sha256 recorded when it was stored, from this machine's frame cache when it kept a copy, else
downloaded, a few ahead of the reader on threads so hashing and downloads overlap what the reader does.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Row

from workers.context import WorkerContext

COPY_BLOCK = 1024 * 1024
PREFETCH = 4  # frames downloaded ahead of the reader


class Unpackable(RuntimeError):
    """A frame that can never be zipped (missing from storage, or not the bytes that were rendered): no later
    attempt could do better, so the job fails at once."""


def _sha256(src: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while block := src.read(COPY_BLOCK):
        digest.update(block)
    src.seek(0)
    return digest.hexdigest()


def fetched(ctx: WorkerContext, frames: Sequence[Row[Any]], folder: Path) -> Iterator[tuple[Row[Any], IO[bytes]]]:
    """Each frame row with its image open for reading and checked against the sha256 recorded when it was stored,
    in order. A copy this machine kept when it rendered the frame is used as it is; the others are downloaded.
    PREFETCH frames are fetched and checked ahead of the zip writer, on threads (hashing and downloads overlap the
    zip's upload), so only PREFETCH copies are ever open."""
    scratch = Path(tempfile.mkdtemp(prefix="frames-", dir=folder))

    def fetch(index: int) -> IO[bytes]:
        frame, key, sha256 = frames[index][:3]
        kept = ctx.frames.open(sha256)
        if kept is not None:
            if _sha256(kept) == sha256:
                return kept
            kept.close()
            ctx.frames.drop([sha256])
        path = scratch / str(index)
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
    pending = deque(pool.submit(fetch, i) for i in range(min(PREFETCH, len(frames))))
    try:
        for index, row in enumerate(frames):
            src = pending.popleft().result()
            if index + PREFETCH < len(frames):
                pending.append(pool.submit(fetch, index + PREFETCH))
            with src:
                yield row, src
    finally:
        # Fetches still running are not waited for: a download stalled on a hung storage must not hold up the end
        # of an attempt that failed or hit its soft time limit. Each copy is closed whenever its fetch ends.
        for future in pending:
            future.add_done_callback(_close_fetched)
        pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _close_fetched(future: Future[IO[bytes]]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()
