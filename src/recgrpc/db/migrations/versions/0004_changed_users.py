"""changed_users: SQLite's change feed of users whose stored context changed

Revision ID: 0004_changed_users
Revises: 0003_feedback_id
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_changed_users"
down_revision: str | None = "0003_feedback_id"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Created on every backend so the schema is one; only SQLite's writers fill it.
    op.create_table(
        "changed_users",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("user_id", sa.String(length=128), nullable=True),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("changed_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("changed_users")
