"""Each worker's pace on each job (`worker_paces`: frames recorded and their render time, summed as they are
recorded), which a job's ETA reads instead of averaging its frames at every status poll. Jobs that exist already
get their paces from their DONE frames.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worker_paces",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=False),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("render_ms_total", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "worker"),
    )
    op.execute(
        "INSERT INTO worker_paces (job_id, worker, frames, render_ms_total) "
        "SELECT job_id, worker, count(*), coalesce(sum(render_time_ms), 0) FROM frames "
        "WHERE status = 'DONE' AND worker IS NOT NULL GROUP BY job_id, worker"
    )


def downgrade() -> None:
    op.drop_table("worker_paces")
