"""recording uploads straight into multipart uploads: tus and large chunks

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 22:40:00

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
UTC = sa.DateTime(timezone=True)


def upgrade():
    with op.batch_alter_table('recording_uploads', schema=None) as batch_op:
        batch_op.drop_constraint('upload_kind', type_='check')
        batch_op.create_check_constraint('upload_kind', "kind IN ('chunked', 'single', 'tus')")
        batch_op.add_column(sa.Column('multipart_id', sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column('object_key', sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column('part_size', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('offset', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('tail_size', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('hash_state', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('hashed_bytes', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('head', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('audio_state', JSON, nullable=True))
        batch_op.add_column(sa.Column('tus_metadata', JSON, nullable=True))
        batch_op.add_column(
            sa.Column(
                'concat',
                sa.Enum('partial', 'final', name='upload_concat', native_enum=False, create_constraint=True,
                        length=11),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column('concat_parts', JSON, nullable=True))
        batch_op.add_column(sa.Column('expires_at', UTC, nullable=True))
        batch_op.add_column(sa.Column('locked_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('locked_until', UTC, nullable=True))

    with op.batch_alter_table('recording_upload_chunks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('etag', sa.String(length=128), nullable=True))

    op.create_table(
        'recording_upload_parts',
        sa.Column('upload_id', sa.String(length=32), nullable=False),
        sa.Column('number', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('etag', sa.String(length=128), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['upload_id'], ['recording_uploads.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('upload_id', 'number'),
    )


def downgrade():
    op.drop_table('recording_upload_parts')
    with op.batch_alter_table('recording_upload_chunks', schema=None) as batch_op:
        batch_op.drop_column('etag')
    op.execute("DELETE FROM recording_uploads WHERE kind = 'tus'")
    with op.batch_alter_table('recording_uploads', schema=None) as batch_op:
        batch_op.drop_constraint('upload_concat', type_='check')
        for column in ('locked_until', 'locked_by', 'expires_at', 'concat_parts', 'concat', 'tus_metadata',
                       'audio_state', 'head', 'hashed_bytes', 'hash_state', 'tail_size', 'offset',
                       'part_size', 'object_key', 'multipart_id'):
            batch_op.drop_column(column)
        batch_op.drop_constraint('upload_kind', type_='check')
        batch_op.create_check_constraint('upload_kind', "kind IN ('chunked', 'single')")
