"""Deleted jobs (`jobs.deleted_at`) and the storage each job uses (`jobs.storage_bytes`, measured by the janitor).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("storage_bytes", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("storage_measured_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_deleted_at"), ["deleted_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_deleted_at"))
        batch_op.drop_column("storage_measured_at")
        batch_op.drop_column("storage_bytes")
        batch_op.drop_column("deleted_at")
