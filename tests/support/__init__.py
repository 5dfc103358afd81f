"""Test support for seawall.pgbackup: throwaway PostgreSQL clusters and database comparison.

    from tests.support import PgCluster, debian_pg15, embedded_pg18, load_sample
    from tests.support.compare import assert_same_database
"""

from __future__ import annotations

from pathlib import Path

from .pgcluster import (
    PgBinariesNotFound,
    PgCluster,
    PgClusterError,
    debian_pg15,
    embedded_pg18,
    quote_ident,
    quote_literal,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_SQL = REPO_ROOT / "demo" / "vtt_sample.sql"

__all__ = [
    "PgBinariesNotFound",
    "PgCluster",
    "PgClusterError",
    "REPO_ROOT",
    "SAMPLE_SQL",
    "debian_pg15",
    "embedded_pg18",
    "load_sample",
    "quote_ident",
    "quote_literal",
]


def load_sample(cluster: PgCluster, db: str, *, create: bool = True) -> str:
    """Create *db* (unless create=False) and load demo/vtt_sample.sql into it; returns *db*."""
    if create:
        cluster.create_db(db)
    cluster.psql_file(SAMPLE_SQL, db)
    return db
