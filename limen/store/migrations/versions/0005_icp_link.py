"""ICPs: TLS trust per ICP, mutual TLS, OPTIONS ping interval (issue 15, the ICP link).

Revision ID: 0005
Revises: 0004

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TEXT = (
    ("tls_ca_file", 1024),
    ("tls_pin_sha256", 128),
    ("tls_server_name", 255),
    ("tls_client_cert", 1024),
    ("tls_client_key", 1024),
)


def upgrade() -> None:
    """Existing ICPs keep the global trust settings (empty fields) and verify."""
    with op.batch_alter_table("icps") as batch:
        batch.add_column(
            sa.Column("tls_verify", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        for name, length in _TEXT:
            batch.add_column(sa.Column(name, sa.String(length), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("options_interval", sa.Integer(), nullable=False, server_default="30")
        )


def downgrade() -> None:
    with op.batch_alter_table("icps") as batch:
        batch.drop_column("options_interval")
        for name, _ in reversed(_TEXT):
            batch.drop_column(name)
        batch.drop_column("tls_verify")
