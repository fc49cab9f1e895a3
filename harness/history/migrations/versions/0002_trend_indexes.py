"""Indexes for the trend and list queries (a candidate's versions by name, runs by time).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_laf_candidates_name_version", "laf_candidates", ["name_key", "version"])
    op.create_index("ix_laf_runs_recorded_at", "laf_runs", ["recorded_at"])


def downgrade() -> None:
    op.drop_index("ix_laf_runs_recorded_at", "laf_runs")
    op.drop_index("ix_laf_candidates_name_version", "laf_candidates")
