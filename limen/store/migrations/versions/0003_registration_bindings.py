"""Registration bindings written behind by the gateway (issue 4, registrations).

Revision ID: 0003
Revises: 0002

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "registration_bindings",
        sa.Column("device_guid", sa.String(length=36), nullable=False),
        sa.Column("aor", sa.String(length=128), nullable=False),
        sa.Column("contact", sa.Text(), nullable=False),
        sa.Column("transport", sa.String(length=8), nullable=False),
        sa.Column("remote_host", sa.String(length=64), nullable=False),
        sa.Column("remote_port", sa.Integer(), nullable=False),
        sa.Column("local_host", sa.String(length=64), nullable=False),
        sa.Column("local_port", sa.Integer(), nullable=False),
        sa.Column("nat", sa.Boolean(), nullable=False),
        sa.Column("call_id", sa.String(length=255), nullable=False),
        sa.Column("cseq", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("device_guid"),
    )
    with op.batch_alter_table("registration_bindings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_registration_bindings_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("registration_bindings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_registration_bindings_expires_at"))
    op.drop_table("registration_bindings")
