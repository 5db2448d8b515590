"""ICPs: the "Limen serves configs" flag (issue 6, provisioning).

Revision ID: 0002
Revises: 0001

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Existing ICPs keep being proxied (false)."""
    with op.batch_alter_table("icps") as batch:
        batch.add_column(
            sa.Column("serves_configs", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("icps") as batch:
        batch.drop_column("serves_configs")
