"""Per-assignment deadline and grade policy; each student's LMS (the roster's format), for exports.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "assignment_settings",
        sa.Column("assignment", sa.String(100), primary_key=True),
        sa.Column("deadline", sa.DateTime),
        sa.Column("policy", sa.String(30), nullable=False),
    )
    with op.batch_alter_table("students") as students:
        students.add_column(sa.Column("lms", sa.String(20), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("students") as students:
        students.drop_column("lms")
    op.drop_table("assignment_settings")
