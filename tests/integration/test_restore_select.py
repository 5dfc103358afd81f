"""Choosing what to restore: newest before a time, and partial restores of chosen tables."""

from __future__ import annotations

import json
import time

from tests.integration import cli
from tests.support.compare import table_checksums


def test_partial_restore_of_chosen_tables_into_a_temporary_database(sample_db, tmp_path):
    cluster = sample_db.cluster
    env = cli.cli_env(sample_db.url, tmp_path / "backups")
    manifest = cli.create(env, "full")
    out = cli.run(["restore", manifest["id"], "--table", "public.players", "--table", "chat_messages",
                   "--table", 'public."Captain\'s ""Log"""', "--json"], env)
    result = json.loads(out.stdout)
    temp = result["database"]
    assert temp.startswith(sample_db.name + "_partial_")
    try:
        source = table_checksums(cluster, sample_db.name)
        restored = table_checksums(cluster, temp)
        chosen = {"public.players", "public.chat_messages_2024q1", "public.chat_messages_2024q2",
                  "public.chat_messages_default", 'public."Captain\'s ""Log"""'}
        for name in chosen:
            assert restored[name] == source[name], name
            assert restored[name][0] > 0 or source[name][0] == 0
        assert set(result["rows"]) == chosen
        # Every other table is there, empty, for the SQL that extracts what was lost.
        assert restored["public.campaigns"][0] == 0 and source["public.campaigns"][0] > 0
        assert restored["lore.rumours"][0] == 0
    finally:
        cluster.drop_db(temp)
    missing = cli.run(["restore", manifest["id"], "--table", "public.nowhere"], env, check=False)
    assert cli.error_line(missing) == "seawall-pgbackup: error: table public.nowhere is not in the backup"
    assert not [d for d in cluster.databases() if "_partial_" in d or d.endswith("__seawall_restore")]


def test_restore_the_newest_backup_before_a_time(sample_db, tmp_path):
    cluster = sample_db.cluster
    env = cli.cli_env(sample_db.url, tmp_path / "backups")
    first = cli.create(env, "full")
    time.sleep(1.1)
    cluster.psql("DELETE FROM lore.rumours", sample_db.name)
    second = cli.create(env, "full")
    assert second["table_rows"]["lore.rumours"] == 0 < first["table_rows"]["lore.rumours"]
    target = cluster.url(sample_db.name + "_before", with_password=False)
    cli.run(["restore", "latest", "--before", second["created_at"], "--target-url", target], env)
    try:
        assert cluster.scalar("SELECT current_setting('seawall.restored_backup')", sample_db.name + "_before") \
            == first["id"]
        assert int(cluster.scalar("SELECT count(*) FROM lore.rumours", sample_db.name + "_before")) \
            == first["table_rows"]["lore.rumours"]
    finally:
        cluster.drop_db(sample_db.name + "_before")
    early = cli.run(["restore", "--before", "2020-01-01 00:00", "--target-url", target], env, check=False)
    assert cli.error_line(early).startswith("seawall-pgbackup: error: no good full backup of %s before "
                                            "2020-01-01T00:00:00.000000Z" % sample_db.name)
    bad = cli.run(["restore", "--before", "last tuesday", "--target-url", target], env, check=False)
    assert cli.error_line(bad) == ("seawall-pgbackup: error: time 'last tuesday' is not valid: use ISO 8601 such as "
                                   "2026-11-24T13:00:00Z or '2026-11-24 13:00'")
