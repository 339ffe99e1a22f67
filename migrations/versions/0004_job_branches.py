"""jobs carry the branch they serve

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 10:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('branch_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f('fk_jobs_branch_id_branches'), 'branches', ['branch_id'], ['id'], ondelete='CASCADE'
        )
        batch_op.create_index('ix_jobs_branch_id_enqueued_at', ['branch_id', 'enqueued_at'], unique=False)

    # Jobs sent before this revision: the branch of the import or recording upload they serve.
    op.execute(
        "UPDATE jobs SET branch_id = (SELECT lead_imports.branch_id FROM lead_imports"
        " WHERE lead_imports.job_id = jobs.id) WHERE branch_id IS NULL"
    )
    op.execute(
        "UPDATE jobs SET branch_id = (SELECT users.branch_id FROM recording_uploads"
        " JOIN users ON users.id = recording_uploads.telecaller_id"
        " WHERE recording_uploads.job_id = jobs.id) WHERE branch_id IS NULL"
    )


def downgrade():
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_branch_id_enqueued_at')
        batch_op.drop_constraint(batch_op.f('fk_jobs_branch_id_branches'), type_='foreignkey')
        batch_op.drop_column('branch_id')
