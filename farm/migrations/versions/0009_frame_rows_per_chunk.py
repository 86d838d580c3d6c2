"""Frame rows are made per chunk, when a worker claims it, and no query looks frames up by status or worker any more
(a worker's pace is read from `worker_paces`): the (job, status) and worker indexes go, so recording a frame moves no
index entry. Rows that exist stay as they are.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("frames", schema=None) as batch_op:
        batch_op.drop_index("ix_frames_worker")
        batch_op.drop_index("ix_frames_job_status")


def downgrade() -> None:
    with op.batch_alter_table("frames", schema=None) as batch_op:
        batch_op.create_index("ix_frames_job_status", ["job_id", "status"], unique=False)
        batch_op.create_index("ix_frames_worker", ["worker"], unique=False)
