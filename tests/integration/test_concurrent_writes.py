"""A backup taken while pgbench writes restores to a consistent database (one snapshot)."""

from __future__ import annotations

import subprocess

from tests.integration import cli

# TPC-B keeps these equal in every committed state: a torn snapshot breaks them.
BALANCES = ("SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(bbalance) FROM pgbench_branches), "
            "(SELECT sum(tbalance) FROM pgbench_tellers), (SELECT coalesce(sum(delta), 0) FROM pgbench_history), "
            "(SELECT count(*) FROM pgbench_history)")


def test_backup_under_pgbench_load_is_consistent(pg, tmp_path):
    source, copy = "bench_src", "bench_copy"
    pg.create_db(source)
    try:
        pg.run("pgbench", "-i", "-q", "-s", "2", source, db=source)
        load = subprocess.Popen([pg.bin("pgbench"), "-c", "4", "-j", "2", "-T", "12", "-n", source],
                                env=pg.env(source), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            env = cli.cli_env(pg.url(source), tmp_path / "backups")
            # Wait until transactions are flowing, then back up twice while they continue.
            pg.run("psql", "-c", "SELECT pg_sleep(2)", db=source)
            first = cli.create(env, "full")
            second = cli.create(env, "full")
            assert load.poll() is None, "pgbench stopped before the backups finished"
        finally:
            err = load.communicate(timeout=120)[1]
        assert load.returncode == 0, err
        for manifest in (first, second):
            cli.run(["restore", manifest["id"], "--target-url", pg.url(copy, with_password=False), "--clean"], env)
            row = pg.psql(BALANCES, copy)[0]
            assert row[0] == row[1] == row[2] == row[3], row
            assert int(row[4]) > 0, "the backup ran while no transaction had committed yet"
            # The manifest's row counts come from the dump's own snapshot, not from a moment later.
            assert manifest["table_rows"]["public.pgbench_history"] == int(row[4])
            assert manifest["table_rows"]["public.pgbench_accounts"] == 200000
        # The live database moved on after the backup: the restored copy is a point in the past.
        assert int(pg.scalar("SELECT count(*) FROM pgbench_history", source)) >= int(row[4])
    finally:
        pg.drop_db(copy)
        pg.drop_db(source)
