"""jobs carry the record they serve

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 19:45:00

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
#: The callbacks sent when a job's retries are exhausted: they serve what the job served.
CALLBACKS = ('import_leads_exhausted', 'recording_upload_exhausted')


def upgrade():
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('serves_kind', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('serves_id', JSON, nullable=True))

    # Jobs sent before this revision: the import or recording upload that names them, and for a
    # callback, the record of the job it is about.
    bind = op.get_bind()
    jobs = sa.table(
        'jobs',
        sa.column('id', sa.String),
        sa.column('actor', sa.String),
        sa.column('args', JSON),
        sa.column('serves_kind', sa.String),
        sa.column('serves_id', JSON),
    )
    update = jobs.update().where(jobs.c.id == sa.bindparam('b_id')).values(
        serves_kind=sa.bindparam('b_kind'), serves_id=sa.bindparam('b_record', type_=JSON)
    )
    served = {}
    for kind, table in (('import', 'lead_imports'), ('recording_upload', 'recording_uploads')):
        rows = bind.execute(sa.text(f'SELECT job_id, id FROM {table} WHERE job_id IS NOT NULL')).all()
        served.update({job_id: (kind, record_id) for job_id, record_id in rows})
    callbacks = bind.execute(sa.select(jobs.c.id, jobs.c.args).where(jobs.c.actor.in_(CALLBACKS))).all()
    for job_id, args in callbacks:
        about = args[0].get('message_id') if args and isinstance(args[0], dict) else None
        if about in served:
            served[job_id] = served[about]
    params = [{'b_id': job_id, 'b_kind': kind, 'b_record': record_id} for job_id, (kind, record_id) in served.items()]
    if params:
        bind.execute(update, params)


def downgrade():
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('serves_id')
        batch_op.drop_column('serves_kind')
