"""agents' broker passwords derived from the registry's secret: the stored PBKDF2 form of the token goes

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("mqtt_password_hash")


def downgrade() -> None:
    # the old form cannot be made again (it was of the token, which is not stored): agents' logins then come from
    # the reconciling pass of a registry at 0010 or a token rotation
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("mqtt_password_hash", sa.String(length=256), nullable=True))
