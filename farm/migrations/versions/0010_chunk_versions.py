"""Chunks say when they last changed, in their job's `version` (`chunks.job_version`, indexed with the job), so the
live stream reads only the chunks that changed since its last look instead of every chunk of the job. Chunks that
exist already start at 0: a live view reads them whole when it starts.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("chunks") as batch:
        batch.add_column(sa.Column("job_version", sa.Integer(), server_default="0", nullable=False))
        batch.create_index("ix_chunks_job_version", ["job_id", "job_version"])


def downgrade() -> None:
    with op.batch_alter_table("chunks") as batch:
        batch.drop_index("ix_chunks_job_version")
        batch.drop_column("job_version")
