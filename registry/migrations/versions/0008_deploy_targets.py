"""deploy targets: an assignment or a deployment names a model package or a classical method (``method:rzf``)

The two ``model_id`` columns lose their foreign key to ``models``: a method is not a stored package. The
registry checks every target when it is deployed (a package must exist and be the site's, a method must be a
precoding baseline taking its options), which the key did for packages only.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TABLES = ("assignments", "deployments")
# SQLite keeps the constraints unnamed: batch mode names them by this convention to drop them
NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def upgrade() -> None:
    bind = op.get_bind()
    for table in TABLES:
        if bind.dialect.name == "sqlite":
            with op.batch_alter_table(table, naming_convention=NAMING) as batch:
                batch.drop_constraint(f"fk_{table}_model_id_models", type_="foreignkey")
            continue
        for key in sa.inspect(bind).get_foreign_keys(table):
            if key["constrained_columns"] == ["model_id"]:
                op.drop_constraint(key["name"], table, type_="foreignkey")


def downgrade() -> None:
    # a method target has no row in models: it cannot be kept under the key
    for table in TABLES:
        op.execute(sa.text(f"DELETE FROM {table} WHERE model_id LIKE 'method:%'"))
        with op.batch_alter_table(table, naming_convention=NAMING) as batch:
            batch.create_foreign_key(f"fk_{table}_model_id_models", "models", ["model_id"], ["id"])
