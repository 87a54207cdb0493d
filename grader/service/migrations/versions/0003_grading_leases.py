"""Which server is grading a submission, and until when its claim holds: several servers share one
database, and one that dies is known dead by its lock or by its lapsed lease (servers.py).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("submissions") as submissions:
        submissions.add_column(sa.Column("claimed_by", sa.String(32)))
        submissions.add_column(sa.Column("lease_expires", sa.DateTime))


def downgrade() -> None:
    with op.batch_alter_table("submissions") as submissions:
        submissions.drop_column("lease_expires")
        submissions.drop_column("claimed_by")
