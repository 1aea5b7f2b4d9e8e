"""every job from its enqueue: run_at and level on jobs; the audit log's queue; incident acknowledgements

jobs.run_at: when a delayed job (or a retry waiting for its backoff) is due; jobs.level: its priority level.
ix_jobs_scheduled_run_at: the delayed jobs by due time (partial: status 'scheduled').
audit_logs.queue: the queue an action touched, filled in for existing rows where the record names it.
incident_acks: acknowledged and snoozed incidents.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("run_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("level", sa.Integer(), nullable=True))
        batch_op.create_index(
            "ix_jobs_scheduled_run_at",
            ["run_at"],
            unique=False,
            postgresql_where=sa.text("status = 'scheduled'"),
            sqlite_where=sa.text("status = 'scheduled'"),
        )
    with op.batch_alter_table("audit_logs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("queue", sa.String(length=100), nullable=True))
        batch_op.create_index("ix_audit_logs_queue_id", ["queue", "id"], unique=False)
    _backfill_audit_queue()
    op.create_table(
        "incident_acks",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("queue", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("type", "queue", name="uq_incident_ack"),
    )


def _backfill_audit_queue() -> None:
    """Queue actions name their queue; job actions carry it in their result (when they succeeded)."""
    op.execute("UPDATE audit_logs SET queue = entity_id WHERE entity_type = 'QUEUE'")
    pg = op.get_bind().dialect.name == "postgresql"
    from_result = "result ->> 'queue'" if pg else "json_extract(result, '$.queue')"
    op.execute(f"UPDATE audit_logs SET queue = substr({from_result}, 1, 100) WHERE entity_type = 'JOB'")


def downgrade() -> None:
    op.drop_table("incident_acks")
    with op.batch_alter_table("audit_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_logs_queue_id")
        batch_op.drop_column("queue")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_scheduled_run_at")
        batch_op.drop_column("level")
        batch_op.drop_column("run_at")
