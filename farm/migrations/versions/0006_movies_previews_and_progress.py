"""Preview movies (`jobs.movie_*`, `jobs.preview_movie`), preview jobs (`jobs.preview`) and live progress inside a
frame (`chunks.frame_progress`, `chunks.progress`). Rows that exist already get the values a job submitted before
had: not a preview, a movie wanted, no progress measured.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("frame_progress", sa.Float(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("progress", sa.Float(), nullable=False, server_default="0"))

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("preview", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("preview_movie", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.add_column(sa.Column("movie_key", sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column("movie_filename", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("movie_size", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        for column in ("movie_size", "movie_filename", "movie_key", "preview_movie", "preview"):
            batch_op.drop_column(column)

    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.drop_column("progress")
        batch_op.drop_column("frame_progress")
