"""Split stills: `jobs.split` (the parts one still is rendered in; 1 for every job submitted before) and
`chunks.part` (a part's stored EXR and what the merge needs of it; none for chunks of frames).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("part", sa.JSON(), nullable=True))

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("split", sa.Integer(), server_default="1", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("split")

    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.drop_column("part")
