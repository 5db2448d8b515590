"""Per-device call admission limits (issue 10): calls at once, attempts per minute.

Revision ID: 0004
Revises: 0003

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sip_devices") as batch:
        batch.add_column(sa.Column("max_calls", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_call_attempts", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sip_devices") as batch:
        batch.drop_column("max_call_attempts")
        batch.drop_column("max_calls")
