"""Per-user limits on work waiting, checked at submission: how many jobs one owner may have under way
(FARM_USER_MAX_ACTIVE_JOBS) and how many frames waiting or rendering (FARM_USER_MAX_QUEUED_FRAMES).

Fair share keeps a big queue from starving others; these keep one user's queue from growing without bound (each
queued frame is rows, messages and, later, storage). Counted from the database at each submission, so a job that
ends frees its share at once, with nothing to keep in step.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from farm.config import Settings
from farm.errors import FarmError
from farm.models import Job, JobStatus

ENDED = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED)
WAITING = (JobStatus.QUEUED, JobStatus.RENDERING)


class OverLimit(FarmError):
    """A per-user limit refuses the submission; it names the setting, so an admin knows what to raise."""

    status = 429

    def __init__(self, code: str, setting: str, limit: int, message: str) -> None:
        super().__init__(None, code, f"{message} (the limit, {setting}, is {limit})", limit=limit, setting=setting)


def _owned(owner: str | None) -> ColumnElement[bool]:
    return Job.owner.is_(None) if owner is None else Job.owner == owner


def check_active_jobs(session: Session, settings: Settings, owner: str | None) -> None:
    """Before the upload is probed: one more job must fit under FARM_USER_MAX_ACTIVE_JOBS."""
    limit = settings.user_max_active_jobs
    if limit is None:
        return
    active = session.scalar(select(func.count()).where(_owned(owner), Job.status.not_in(ENDED))) or 0
    if active >= limit:
        raise OverLimit(
            "too_many_active_jobs",
            "FARM_USER_MAX_ACTIVE_JOBS",
            limit,
            f"you have {active} jobs under way; wait for one to end, or cancel one",
        )


def check_queued_frames(session: Session, settings: Settings, owner: str | None, frames: int) -> None:
    """Once the range is known: the job's `frames` and the owner's frames not yet rendered must fit under
    FARM_USER_MAX_QUEUED_FRAMES."""
    limit = settings.user_max_queued_frames
    if limit is None:
        return
    # Each job counts the frames it has DONE (`frames_rendered`, kept exact by `states.frame_done`): a sum over
    # the owner's jobs, not a count over their frames, which for a million-frame job would read a million rows.
    left = Job.frame_end - Job.frame_start + 1 - Job.frames_rendered
    queued = session.scalar(select(func.sum(left)).where(_owned(owner), Job.status.in_(WAITING))) or 0
    if queued + frames > limit:
        raise OverLimit(
            "too_many_queued_frames",
            "FARM_USER_MAX_QUEUED_FRAMES",
            limit,
            f"this job's {frames} frames and your {queued} frames waiting would be {queued + frames}",
        )
