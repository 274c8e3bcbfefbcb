"""feedback.feedback_id: the caller's idempotency key, unique

Revision ID: 0003_feedback_id
Revises: 0002_item_neighbours
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_feedback_id"
down_revision: str | None = "0002_item_neighbours"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Rows stored before the key existed get one made from their row id, then the column is
    # required and unique like interactions.event_id.
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.add_column(sa.Column("feedback_id", sa.String(length=128), nullable=True))
    feedback = sa.table("feedback", sa.column("id", sa.BigInteger()), sa.column("feedback_id"))
    op.execute(
        feedback.update()
        .where(feedback.c.feedback_id.is_(None))
        .values(feedback_id=sa.literal("stored-") + sa.cast(feedback.c.id, sa.String()))
    )
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.alter_column("feedback_id", existing_type=sa.String(length=128), nullable=False)
        batch_op.create_unique_constraint("feedback_feedback_id_key", ["feedback_id"])


def downgrade() -> None:
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.drop_constraint("feedback_feedback_id_key", type_="unique")
        batch_op.drop_column("feedback_id")
