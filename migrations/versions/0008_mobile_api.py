"""the mobile API: call log notes, idempotency keys, lead filter and search indexes

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 23:00:00

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
UTC = sa.DateTime(timezone=True)


def upgrade():
    with op.batch_alter_table('call_logs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('notes', sa.Text(), nullable=True))

    op.create_table(
        'idempotency_keys',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=100), nullable=False),
        sa.Column('fingerprint', sa.String(length=200), nullable=False),
        sa.Column('status_code', sa.SmallInteger(), nullable=True),
        sa.Column('response', JSON, nullable=True),
        sa.Column('headers', JSON, nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('user_id', 'key'),
    )
    op.create_index('ix_idempotency_keys_created_at', 'idempotency_keys', ['created_at'], unique=False)

    op.create_index('ix_leads_telecaller_id_status_id', 'leads', ['telecaller_id', 'status', 'id'])
    op.create_index('ix_leads_branch_id_status_id', 'leads', ['branch_id', 'status', 'id'])
    # varchar_pattern_ops: LIKE 'prefix%' uses it whatever the collation (PostgreSQL only; a plain index
    # on SQLite, which the models declare alike).
    op.create_index(
        'ix_leads_branch_id_phone_prefix',
        'leads',
        ['branch_id', 'phone_number'],
        postgresql_ops={'phone_number': 'varchar_pattern_ops'},
    )
    if op.get_bind().dialect.name == 'postgresql':
        op.create_index(
            'ix_leads_name_words',
            'leads',
            [sa.text("to_tsvector('simple', student_name)")],
            postgresql_using='gin',
        )


def downgrade():
    if op.get_bind().dialect.name == 'postgresql':
        op.drop_index('ix_leads_name_words', table_name='leads')
    op.drop_index('ix_leads_branch_id_phone_prefix', table_name='leads')
    op.drop_index('ix_leads_branch_id_status_id', table_name='leads')
    op.drop_index('ix_leads_telecaller_id_status_id', table_name='leads')
    op.drop_index('ix_idempotency_keys_created_at', table_name='idempotency_keys')
    op.drop_table('idempotency_keys')
    with op.batch_alter_table('call_logs', schema=None) as batch_op:
        batch_op.drop_column('notes')
