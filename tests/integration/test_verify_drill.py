"""Verification at every level, damage of every kind named, and the DR drill with its report."""

from __future__ import annotations

import json
import os
import shutil

from tests.integration import cli
from tests.support import debian_pg15, embedded_pg18


def _manifest(backup_dir, backup):
    with open(os.path.join(backup_dir, backup["type"], backup["id"] + ".json"), encoding="utf-8") as handle:
        return json.load(handle)


def test_restore_level_compares_row_counts_and_runs_probes(sample_db, tmp_path):
    backup_dir = tmp_path / "backups"
    env = cli.cli_env(sample_db.url, backup_dir)
    backup = cli.create(env, "full")
    assert backup["table_rows"]["public.players"] > 0
    out = json.loads(cli.run(["verify", backup["id"], "--level", "restore", "--json",
                              "--probe", "SELECT count(*) > 0 FROM public.players",
                              "--probe", "SELECT count(*) = 3 FROM pg_partition_tree('public.chat_messages') WHERE isleaf"], env).stdout)[0]
    assert out["ok"] is True and out["level"] == "restore" and out["rto_seconds"] > 0
    assert "%d tables with the recorded row counts" % len(backup["table_rows"]) in out["details"]
    assert "2 probes true" in out["details"]
    recorded = _manifest(backup_dir, backup)["verification"]
    assert recorded["level"] == "restore" and recorded["ok"] is True
    assert not [d for d in sample_db.cluster.databases() if d.startswith("seawall_verify_")]

    # A backup whose restore does not hold the recorded rows fails, names the table, and is marked bad.
    manifest = _manifest(backup_dir, backup)
    manifest["table_rows"]["public.players"] += 1
    with open(os.path.join(backup_dir, "full", backup["id"] + ".json"), "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)
    line = cli.error_line(cli.run(["verify", backup["id"], "--level", "restore"], env, check=False))
    assert "restored rows differ: public.players has %d rows, the backup recorded %d" % (
        manifest["table_rows"]["public.players"] - 1, manifest["table_rows"]["public.players"]) in line
    assert _manifest(backup_dir, backup)["verification"]["ok"] is False
    assert cli.listing(env) == []
    manifest["table_rows"]["public.players"] -= 1
    with open(os.path.join(backup_dir, "full", backup["id"] + ".json"), "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)
    line = cli.error_line(cli.run(["verify", backup["id"], "--level", "restore", "--probe", "SELECT false"], env,
                                  check=False))
    assert line.endswith("probe 'SELECT false' returned [['f']], not true")
    assert not [d for d in sample_db.cluster.databases() if d.startswith("seawall_verify_")]


def test_every_kind_of_damage_is_detected_and_named(pg15, tmp_path):
    from tests.support import load_sample

    load_sample(pg15, "damage")
    try:
        backup_dir = tmp_path / "backups"
        env = cli.cli_env(pg15.url("damage"), backup_dir)
        first, second, third, fourth = (cli.create(env, "full") for _attempt in range(4))
        paths = {b["id"]: [os.path.join(backup_dir, "full", f["name"]) for f in b["files"]]
                 for b in (first, second, third, fourth)}
        # One flipped byte.
        with open(paths[first["id"]][0], "r+b") as handle:
            handle.seek(200)
            value = handle.read(1)[0]
            handle.seek(200)
            handle.write(bytes([value ^ 0x40]))
        # A truncated file.
        with open(paths[second["id"]][1], "r+b") as handle:
            handle.truncate(10)
        # A deleted manifest.
        os.unlink(os.path.join(backup_dir, "full", third["id"] + ".json"))
        # Two files swapped between backups.
        swap = str(tmp_path / "swap")
        shutil.move(paths[fourth["id"]][0], swap)
        shutil.move(paths[first["id"]][1], paths[fourth["id"]][0])
        shutil.move(swap, paths[first["id"]][1])
        proc = cli.run(["verify", "--json", "--level", "checksum"], env, check=False)
        assert proc.returncode == 8  # backup-bad (docs/errors.md)
        results = json.loads(proc.stdout)
        by_key = {r["id"] or r["file"]: r for r in results}
        assert "file %s does not match its sha256 (corrupted)" % paths[first["id"]][0] in by_key[first["id"]]["details"]
        assert "file %s has 10 bytes, the manifest recorded" % paths[second["id"]][1] in by_key[second["id"]]["details"]
        assert by_key[fourth["id"]]["ok"] is False and paths[fourth["id"]][0] in by_key[fourth["id"]]["details"]
        for orphan in paths[third["id"]]:
            assert by_key[orphan]["details"].startswith("%s: no manifest names this file" % orphan)
        assert third["id"] not in by_key
        assert cli.listing(env) == []  # nothing damaged is offered for restore any more
    finally:
        pg15.drop_db("damage")


def test_drill_on_another_cluster_writes_its_report(sample_db, tmp_path):
    backup_dir = tmp_path / "backups"
    env = cli.cli_env(sample_db.url, backup_dir)
    backup = cli.create(env, "full")
    drill_host = (debian_pg15 if sample_db.cluster.major == 15 else embedded_pg18)()
    drill_host.start()
    try:
        env = dict(env, PGPASSFILE=str(drill_host.passfile))
        report = json.loads(cli.run(["drill", "--target-url", drill_host.url("postgres", with_password=False),
                                     "--probe", "SELECT count(*) > 0 FROM public.chat_messages", "--json"], env).stdout)
        assert report["ok"] is True and report["backup_id"] == backup["id"]
        assert report["rto_seconds"] > 0 and report["server"] == "127.0.0.1:%d" % drill_host.port
        with open(os.path.join(backup_dir, "logs", "drill-latest.json"), encoding="utf-8") as handle:
            assert json.load(handle) == report
        assert not [d for d in drill_host.databases() if d.startswith("seawall_verify_")]
        failed = cli.run(["drill", "--target-url", drill_host.url("postgres", with_password=False),
                          "--probe", "SELECT count(*) = 0 FROM public.players"], env, check=False)
        assert cli.error_line(failed).startswith("seawall-pgbackup: error: DR drill failed: ")
        with open(os.path.join(backup_dir, "logs", "drill-latest.json"), encoding="utf-8") as handle:
            assert json.load(handle)["ok"] is False
    finally:
        drill_host.destroy()


def test_a_verification_that_cannot_run_never_marks_the_backup_bad(pg15, tmp_path):
    from tests.support import load_sample
    from tests.support.pgcluster import free_port

    load_sample(pg15, "unverifiable")
    try:
        backup_dir = tmp_path / "backups"
        env = cli.cli_env(pg15.url("unverifiable"), backup_dir)
        backup = cli.create(env, "full")
        nowhere = "postgresql://postgres@127.0.0.1:%d/postgres" % free_port()
        line = cli.error_line(cli.run(["verify", backup["id"], "--level", "restore", "--target-url", nowhere], env,
                                      check=False))
        assert line.startswith("seawall-pgbackup: error: cannot connect to server 127.0.0.1:")
        line = cli.error_line(cli.run(["verify", backup["id"], "--level", "restore", "--probe", "SELEC 1"], env,
                                      check=False))
        assert line.startswith("seawall-pgbackup: error: probe 'SELEC 1' cannot run on the restored database: ")
        assert _manifest(backup_dir, backup)["verification"] is None
        assert [b["id"] for b in cli.listing(env)] == [backup["id"]]
        # A drill that cannot reach its server is a failed drill, and says so in its report.
        failed = cli.run(["drill", "--target-url", nowhere], env, check=False)
        assert cli.error_line(failed).startswith("seawall-pgbackup: error: DR drill failed: cannot connect to ")
        with open(os.path.join(backup_dir, "logs", "drill-latest.json"), encoding="utf-8") as handle:
            report = json.load(handle)
        assert report["ok"] is False and "(step connect)" in report["details"]
        assert [b["id"] for b in cli.listing(env)] == [backup["id"]]
    finally:
        pg15.drop_db("unverifiable")
