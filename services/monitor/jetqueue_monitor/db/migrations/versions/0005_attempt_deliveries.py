"""job_attempts.delivery: a redelivered attempt (its worker died) keeps the dead run as its own row

The unique key becomes (job_id, attempt, delivery); existing rows are delivery 1.
ix_job_attempts_unfinished: the unfinished attempts per worker, for marking an offline worker's as stalled.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delivery", sa.Integer(), server_default=sa.text("1"), nullable=False))
        batch_op.drop_constraint("uq_job_attempt", type_="unique")
        batch_op.create_unique_constraint("uq_job_attempt_delivery", ["job_id", "attempt", "delivery"])
        batch_op.create_index(
            "ix_job_attempts_unfinished",
            ["worker_id"],
            unique=False,
            postgresql_where=sa.text("finished_at IS NULL"),
            sqlite_where=sa.text("finished_at IS NULL"),
        )


def downgrade() -> None:
    # Keeps the newest delivery of each attempt: the old key has room for one.
    op.execute(
        "DELETE FROM job_attempts WHERE EXISTS (SELECT 1 FROM job_attempts AS newer "
        "WHERE newer.job_id = job_attempts.job_id AND newer.attempt = job_attempts.attempt "
        "AND newer.delivery > job_attempts.delivery)"
    )
    with op.batch_alter_table("job_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_job_attempts_unfinished")
        batch_op.drop_constraint("uq_job_attempt_delivery", type_="unique")
        batch_op.create_unique_constraint("uq_job_attempt", ["job_id", "attempt"])
        batch_op.drop_column("delivery")
