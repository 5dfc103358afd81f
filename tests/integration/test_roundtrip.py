"""Back up each kind from real PostgreSQL 15 and 18 servers, restore it, and compare with the source."""

from __future__ import annotations

import json
import os
import stat

import pytest

from seawall_pgbackup.model.manifest import Manifest
from tests.integration import cli
from tests.support import debian_pg15, embedded_pg18
from tests.support.compare import assert_same_database, role_summary, schema_dump, table_checksums

FACTORIES = {15: debian_pg15, 18: embedded_pg18}


@pytest.fixture(name="fresh_cluster")
def _fresh_cluster(pg):
    """A brand-new cluster of the same major: nothing but its bootstrap superuser."""
    cluster = FACTORIES[pg.major]()
    cluster.start()
    yield cluster
    cluster.destroy()


def _files_are_private(backup_dir):
    for root, dirs, files in os.walk(backup_dir):
        for name in dirs:
            assert stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode) == 0o700, name
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode) == 0o600, name


def test_full_backup_rebuilds_the_database_on_a_fresh_cluster(sample_db, fresh_cluster, tmp_path):
    env = cli.cli_env(sample_db.url, tmp_path / "backups")
    manifest = cli.create(env, "full")
    assert [f["role"] for f in manifest["files"]] == ["database", "globals"]
    assert manifest["server"]["major"] == sample_db.cluster.major
    assert manifest["client"]["major"] == sample_db.cluster.major  # the matching client was chosen
    assert manifest["globals"]["role_passwords"] is True
    _files_are_private(tmp_path / "backups")
    on_disk = json.loads((tmp_path / "backups" / "full" / (manifest["id"] + ".json")).read_text())
    assert on_disk == manifest and Manifest.from_dict(on_disk).to_dict() == on_disk  # typed, and the same shape
    listed = cli.listing(env)
    assert [b["id"] for b in listed] == [manifest["id"]]
    assert set(listed[0]) >= {"id", "type", "database", "created_at", "finished_at", "size", "sha256"}

    target = fresh_cluster.url(sample_db.name, with_password=False)
    restore_env = dict(env, PGPASSFILE=str(fresh_cluster.passfile))
    out = cli.run(["restore", manifest["id"], "--target-url", target, "--with-globals", "--json"], restore_env)
    result = json.loads(out.stdout)
    assert result["globals_applied"] is True and result["objects"] > 0
    assert_same_database(sample_db.cluster, sample_db.name, fresh_cluster, sample_db.name)
    assert fresh_cluster.scalar("SELECT current_setting('seawall.restored_backup')", sample_db.name) == manifest["id"]
    # The connecting role kept its own password on the target cluster.
    assert fresh_cluster.scalar("SELECT 1", user="postgres") == "1"


def test_restore_latest_into_a_new_database_on_the_same_cluster(sample_db, tmp_path):
    env = cli.cli_env(sample_db.url, tmp_path / "backups")
    cli.create(env, "full")
    copy = sample_db.name + "_copy"
    cli.run(["restore", "latest", "--target-url", sample_db.cluster.url(copy, with_password=False), "--jobs", "2"], env)
    try:
        assert_same_database(sample_db.cluster, sample_db.name, sample_db.cluster, copy)
    finally:
        sample_db.cluster.drop_db(copy)


def test_schema_then_data_restore(sample_db, tmp_path):
    cluster = sample_db.cluster
    env = cli.cli_env(sample_db.url, tmp_path / "backups", PGPASSFILE=str(cluster.passfile))
    schema = cli.create(env, "schema")
    data = cli.create(env, "data")
    copy = sample_db.name + "_split"
    try:
        cli.run(["restore", schema["id"], "--target-url", cluster.url(copy, with_password=False)], env)
        assert schema_dump(cluster, copy) == schema_dump(cluster, sample_db.name)
        assert all(rows == 0 for rows, _md5 in table_checksums(cluster, copy).values())
        cli.run(["restore", data["id"], "--target-url", cluster.url(copy, with_password=False)], env)
        assert_same_database(cluster, sample_db.name, cluster, copy, check_database=False)
        # A second data restore would duplicate rows: refused by the database, in one transaction.
        again = cli.run(["restore", data["id"], "--target-url", cluster.url(copy, with_password=False)], env, check=False)
        assert "duplicate key value" in cli.error_line(again)
        assert table_checksums(cluster, copy) == table_checksums(cluster, sample_db.name)
        # --clean empties each table right before refilling it.
        cluster.psql('DELETE FROM public.chat_messages WHERE message_id % 2 = 0', copy)
        cli.run(["restore", data["id"], "--target-url", cluster.url(copy, with_password=False), "--clean"], env)
        assert table_checksums(cluster, copy) == table_checksums(cluster, sample_db.name)
    finally:
        cluster.drop_db(copy)


def test_globals_backup_recreates_roles_only(sample_db, fresh_cluster, tmp_path):
    env = cli.cli_env(sample_db.url, tmp_path / "backups")
    manifest = cli.create(env, "globals")
    assert [f["role"] for f in manifest["files"]] == ["globals"]
    before = fresh_cluster.databases()
    env["PGPASSFILE"] = str(fresh_cluster.passfile)
    cli.run(["restore", manifest["id"], "--target-url", fresh_cluster.url("postgres", with_password=False)], env)
    roles = ["vtt_app", "vtt_readonly"]
    assert role_summary(fresh_cluster, roles) == role_summary(sample_db.cluster, roles)
    assert fresh_cluster.databases() == before


def test_upgrade_path_pg15_backup_restores_on_pg18(pg15, pg18, tmp_path):
    from tests.support import load_sample

    load_sample(pg15, "vtt_upgrade")
    try:
        env = cli.cli_env(pg15.url("vtt_upgrade"), tmp_path / "backups", PGPASSFILE=str(pg18.passfile))
        manifest = cli.create(env, "full")
        assert manifest["client"]["major"] == 15
        cli.run(["restore", manifest["id"], "--target-url", pg18.url("vtt_upgraded", with_password=False),
                 "--with-globals"], env)
        assert_same_database(pg15, "vtt_upgrade", pg18, "vtt_upgraded", check_database=False)
    finally:
        pg15.drop_db("vtt_upgrade")
        pg18.drop_db("vtt_upgraded")


def test_zstd_and_uncompressed_backups_restore(sample_db, tmp_path):
    cluster = sample_db.cluster
    for compression in ("zstd", "none"):
        env = cli.cli_env(sample_db.url, tmp_path / compression, BACKUP_COMPRESSION=compression,
                          PGPASSFILE=str(cluster.passfile))
        manifest = cli.create(env, "full")
        assert manifest["compression"] == compression
        copy = "%s_%s" % (sample_db.name, compression)
        cli.run(["restore", manifest["id"], "--target-url", cluster.url(copy, with_password=False)], env)
        try:
            assert table_checksums(cluster, copy) == table_checksums(cluster, sample_db.name)
        finally:
            cluster.drop_db(copy)


def test_least_privileged_backup_user(sample_db, tmp_path):
    """A managed-service style user (no superuser, pg_read_all_data) gets a full backup, globals without passwords."""
    cluster = sample_db.cluster
    user = "backup_%s" % sample_db.name
    cluster.create_role(user, password="reader-pw", options=["IN ROLE pg_read_all_data"])
    try:
        env = cli.cli_env(cluster.url(sample_db.name, user=user), tmp_path / "denied")
        # pg_read_all_data does not cover large objects: the failure says exactly which one.
        line = cli.error_line(cli.run(["create"], env, check=False))
        assert line == ("seawall-pgbackup: error: pg_dump failed (exit 1): pg_dump: error: could not open large "
                        "object 424201: ERROR:  permission denied for large object 424201")
        cluster.psql("DO $$ DECLARE lo oid; BEGIN FOR lo IN SELECT oid FROM pg_largeobject_metadata LOOP "
                     "EXECUTE format('GRANT SELECT ON LARGE OBJECT %%s TO %%I', lo, '%s'); END LOOP; END $$" % user,
                     sample_db.name)
        env = cli.cli_env(cluster.url(sample_db.name, user=user), tmp_path / "backups",
                          PGPASSFILE=str(cluster.passfile))
        manifest = cli.create(env, "full")
        assert manifest["globals"] == {"role_passwords": False}
        assert manifest["source"]["superuser"] is False
        import gzip

        with gzip.open(tmp_path / "backups" / "full" / manifest["files"][1]["name"], "rt") as handle:
            script = handle.read()
        assert "CREATE ROLE vtt_app;" in script and "PASSWORD" not in script
        copy = sample_db.name + "_ro"
        cli.run(["restore", manifest["id"], "--target-url", cluster.url(copy, with_password=False)], env=dict(
            env, DATABASE_URL=cluster.url(sample_db.name)))
        try:
            assert table_checksums(cluster, copy) == table_checksums(cluster, sample_db.name)
        finally:
            cluster.drop_db(copy)
    finally:
        cluster.psql('DROP OWNED BY "%s"' % user, sample_db.name)
        cluster.psql('DROP ROLE "%s"' % user)
