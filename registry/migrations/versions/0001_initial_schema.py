"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 13:22:50.038165
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('agents',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('site', sa.String(length=64), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('hardware', sa.JSON(), nullable=False),
    sa.Column('runtime', sa.String(length=128), nullable=False),
    sa.Column('plugins', sa.JSON(), nullable=False),
    sa.Column('current_model_id', sa.String(length=128), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agents_site'), ['site'], unique=False)

    op.create_table('events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('agent_id', sa.String(length=64), nullable=False),
    sa.Column('model_id', sa.String(length=128), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_events_agent_id'), ['agent_id'], unique=False)

    op.create_table('models',
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('site', sa.String(length=64), nullable=False),
    sa.Column('task', sa.String(length=32), nullable=False),
    sa.Column('family', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('estimated_energy_uj', sa.Float(), nullable=False),
    sa.Column('training_energy_j', sa.Float(), nullable=False),
    sa.Column('manifest', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('site', 'task', 'version')
    )
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_models_site'), ['site'], unique=False)

    op.create_table('telemetry',
    sa.Column('message_id', sa.String(length=64), nullable=False),
    sa.Column('agent_id', sa.String(length=64), nullable=False),
    sa.Column('site', sa.String(length=64), nullable=False),
    sa.Column('model_id', sa.String(length=128), nullable=True),
    sa.Column('window_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('inferences', sa.Integer(), nullable=False),
    sa.Column('meter', sa.String(length=32), nullable=False),
    sa.Column('meter_kind', sa.String(length=16), nullable=False),
    sa.Column('energy_total_uj', sa.Float(), nullable=False),
    sa.Column('energy_dynamic_uj', sa.Float(), nullable=False),
    sa.Column('estimated_energy_uj', sa.Float(), nullable=True),
    sa.Column('latency_ms_p50', sa.Float(), nullable=False),
    sa.Column('latency_ms_p95', sa.Float(), nullable=False),
    sa.Column('quality', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('message_id')
    )
    with op.batch_alter_table('telemetry', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_telemetry_agent_id'), ['agent_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_telemetry_model_id'), ['model_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_telemetry_site'), ['site'], unique=False)
        batch_op.create_index(batch_op.f('ix_telemetry_window_end'), ['window_end'], unique=False)

    op.create_table('aliases',
    sa.Column('site', sa.String(length=64), nullable=False),
    sa.Column('task', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('model_id', sa.String(length=128), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], ),
    sa.PrimaryKeyConstraint('site', 'task', 'name')
    )
    op.create_table('assignments',
    sa.Column('agent_id', sa.String(length=64), nullable=False),
    sa.Column('model_id', sa.String(length=128), nullable=False),
    sa.Column('previous_model_id', sa.String(length=128), nullable=True),
    sa.Column('deployment_id', sa.Integer(), nullable=True),
    sa.Column('assigned_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], ),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], ),
    sa.PrimaryKeyConstraint('agent_id')
    )
    op.create_table('deployments',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('site', sa.String(length=64), nullable=False),
    sa.Column('model_id', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deployments_site'), ['site'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deployments_site'))

    op.drop_table('deployments')
    op.drop_table('assignments')
    op.drop_table('aliases')
    with op.batch_alter_table('telemetry', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_telemetry_window_end'))
        batch_op.drop_index(batch_op.f('ix_telemetry_site'))
        batch_op.drop_index(batch_op.f('ix_telemetry_model_id'))
        batch_op.drop_index(batch_op.f('ix_telemetry_agent_id'))

    op.drop_table('telemetry')
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_models_site'))

    op.drop_table('models')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_events_agent_id'))

    op.drop_table('events')
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agents_site'))

    op.drop_table('agents')
