"""The history's first schema: runs, candidates, suite results, rules, releases.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from harness.history.schema import SafeText

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "laf_runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("recorded_at", sa.String(40), nullable=False),
        *[sa.Column(c, SafeText) for c in ("created", "recorded_by", "git_commit", "config_fingerprint", "base_fingerprint", "base_model", "precision",
                                          "run_folder", "policy_source", "verdict")],
        sa.Column("exit_code", sa.Integer),
        sa.Column("laf_version", SafeText),
        sa.Column("document", SafeText, nullable=False),
    )
    op.create_table(
        "laf_candidates",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("candidate_key", sa.String(64), primary_key=True),
        sa.Column("candidate", SafeText, nullable=False),
        sa.Column("name_key", sa.String(64), nullable=False),
        sa.Column("name", SafeText, nullable=False),
        sa.Column("version", sa.BigInteger),
        *[sa.Column(c, SafeText) for c in ("adapter_digest", "records_digest", "run_folder", "baseline", "baseline_kind", "verdict")],
        sa.Column("exit_code", sa.Integer),
    )
    op.create_table(
        "laf_suite_results",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("model_key", sa.String(64), primary_key=True),
        sa.Column("suite_key", sa.String(64), primary_key=True),
        sa.Column("model", SafeText, nullable=False),
        sa.Column("suite", SafeText, nullable=False),
        sa.Column("category", SafeText),
        sa.Column("suite_fingerprint", SafeText),
        sa.Column("item_digest", SafeText),
        sa.Column("n", sa.Integer),
        sa.Column("metric", SafeText),
        *[sa.Column(c, sa.Float) for c in ("value", "ci_low", "ci_high")],
        sa.Column("higher_is_better", sa.Boolean),
        *[sa.Column(c, sa.Float) for c in ("ideal", "improvement", "improvement_ci_low", "improvement_ci_high")],
    )
    op.create_table(
        "laf_rules",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("candidate_key", sa.String(64), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("candidate", SafeText, nullable=False),
        *[sa.Column(c, SafeText) for c in ("rule", "suite", "metric", "kind")],
        sa.Column("margin", sa.Float),
        sa.Column("required", sa.Boolean),
        sa.Column("status", SafeText),
        *[sa.Column(c, sa.Float) for c in ("improvement", "ci_low", "ci_high")],
    )
    op.create_table(
        "laf_releases",
        sa.Column("name_key", sa.String(64), primary_key=True),
        sa.Column("version", sa.BigInteger, primary_key=True),
        sa.Column("name", SafeText, nullable=False),
        sa.Column("candidate", SafeText, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("released_at", sa.String(40), nullable=False),
        *[sa.Column(c, SafeText) for c in ("released_by", "git_commit", "note")],
    )


def downgrade() -> None:
    for t in ("laf_releases", "laf_rules", "laf_suite_results", "laf_candidates", "laf_runs"):
        op.drop_table(t)
