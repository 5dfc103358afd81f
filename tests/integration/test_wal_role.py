"""The role seawall.pgbackup.wal_archive (issue #12) and the schedule of the physical jobs.

* The wrappers seawall-pgbackup-wal-push / -wal-fetch: valid shell (sh -n, shellcheck), and run against a stand-in
  engine that records what it gets: the configuration and the secrets come from the files of
  seawall.pgbackup.tooling, never from the command line.
* On real PostgreSQL 15 and 18 servers (throwaway clusters, changed and restarted here): check mode changes nothing;
  a run sets wal_level (replica, or keeps logical), archive_mode, archive_command (the wrapper), archive_timeout and,
  on 18, summarize_wal; it reports RESTART NEEDED without restarting; a second run changes nothing; with
  pgbackup_wal_restart=true it restarts once and then the server runs the settings; a last run changes nothing and
  reports nothing.
* End to end on 15/18: the server archives through the installed wrapper into the repository its OS user owns and
  wal-fetch gives the segment back; the scheduled base and hourly incremental jobs run through run-job as that user.
  After the role's restart archive_timeout holds at once (its pg_reload_conf() wakes the checkpointer, which after a
  start otherwise sleeps checkpoint_timeout first).
* pgbackup_wal_receive: the wrapper and the unit of the wal-receive service (check mode, idempotence, removal with
  its slot, refusals: a bad slot name, no systemd, max_wal_senders=0); the unit's command run as systemd runs it,
  with the engine's real wal-receive (skipped while the engine has none).
* Argument specs reject wrong values; the schedule role adds the base and incremental timers (systemd, Windows) once
  archiving is on; tooling gives the backup role REPLICATION and pg_switch_wal().
* Playbooks: restore.yml's PITR mode recovers to a time between two batches (and refuses an unreachable target before
  writing anything); dr_drill.yml drills a physical backup (scratch server on a private socket, probes, cleanup).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import pytest

from tests.integration.test_roles import ANSIBLE_PLAYBOOK, PLAYBOOKS, REPO, make_root, parse_unit, run_playbook, stats
from tests.support.archiving import ENGINE, SYSTEM_PYTHON
from tests.support.pgcluster import PgBinariesNotFound, PgCluster, debian_pg15, embedded_pg18

ROLE = "seawall.pgbackup.wal_archive"
SECRET = "hunter2-wal"  # in the rendered secrets.env and pgpass only


def write_playbook(tmp_path: Path, tasks: List[dict], variables: dict, name: str = "apply") -> Path:
    playbook = tmp_path / ("%s.yml" % name)
    playbook.write_text(json.dumps([{
        "name": "Apply", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        "tasks": tasks,
    }]))
    (tmp_path / ("%s-vars.json" % name)).write_text(json.dumps(variables))
    return playbook


def apply(tmp_path: Path, variables: dict, *extra: str, tasks_from: str = "",
          check: bool = True) -> subprocess.CompletedProcess:
    include = dict({"name": ROLE}, **({"tasks_from": tasks_from} if tasks_from else {}))  # main: the argument spec
    playbook = write_playbook(tmp_path, [{"name": "Apply the role", "ansible.builtin.include_role": include}],
                              variables)
    return run_playbook(playbook, "-e", "@%s" % (tmp_path / "apply-vars.json"), *extra, check=check)


def task_results(result: subprocess.CompletedProcess) -> Dict[str, dict]:
    """Task name (without the role's prefix) -> the localhost result (the last one of that name)."""
    out = {}
    for play in json.loads(result.stdout)["plays"]:
        for task in play["tasks"]:
            out[task["task"]["name"].split(" : ", 1)[-1]] = task["hosts"].get("localhost", {})
    return out


def restart_notice(result: subprocess.CompletedProcess) -> str:
    found = [r for n, r in task_results(result).items() if n.startswith("Report that a restart is needed")]
    return found[0].get("msg", "") if found and not found[0].get("skipped") else ""


@pytest.fixture(scope="module")
def ansible_ready():
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip("no .venv: run make setup")


# ------------------------------------------------------------------------------------------------ wrappers

def test_wrappers_are_valid_shell_and_pass_no_secret_in_argv(ansible_ready, tmp_path):
    install, config = tmp_path / "opt", tmp_path / "etc"
    config.mkdir()
    (config / "secrets.env").write_text("DATABASE_URL='postgresql://backup@db:5432/vtt'\nBACKUP_SMTP_PASSWORD='%s'\n"
                                        % SECRET)
    (config / "pgpass").write_text("db:5432:*:backup:%s\n" % SECRET)
    apply(tmp_path, {"pgbackup_install_dir": str(install), "pgbackup_config_dir": str(config)},
          tasks_from="scripts.yml")
    push, fetch = install / "bin/seawall-pgbackup-wal-push", install / "bin/seawall-pgbackup-wal-fetch"
    for script in (push, fetch):
        assert stat.S_IMODE(script.stat().st_mode) == 0o755
        subprocess.run(["sh", "-n", str(script)], check=True)
        if shutil.which("shellcheck"):
            checked = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True, text=True,
                                     check=False)
            assert checked.returncode == 0, checked.stdout
        assert SECRET not in script.read_text()
    # A stand-in engine records its argv and the environment the wrapper gives it.
    record = tmp_path / "record.json"
    engine = install / "bin/seawall-pgbackup"
    engine.write_text("#!/usr/bin/env python3\nimport json, os, sys\njson.dump({'argv': sys.argv[1:], "
                      "'env': {k: os.environ.get(k) for k in ('DATABASE_URL', 'BACKUP_SMTP_PASSWORD', "
                      "'BACKUP_CONFIG', 'PGPASSFILE')}, 'umask': os.umask(0)}, open(%r, 'w'))\nsys.exit(3)\n"
                      % str(record))
    engine.chmod(0o755)
    pushed = subprocess.run([str(push), "pg_wal/000000010000000000000003"], capture_output=True, text=True,
                            check=False)
    assert pushed.returncode == 3  # the engine's status reaches PostgreSQL (non-zero: it retries)
    seen = json.loads(record.read_text())
    assert seen["argv"] == ["--config", str(config / "config.json"), "wal-push", "pg_wal/000000010000000000000003"]
    assert seen["env"] == {"DATABASE_URL": "postgresql://backup@db:5432/vtt", "BACKUP_SMTP_PASSWORD": SECRET,
                           "BACKUP_CONFIG": str(config / "config.json"), "PGPASSFILE": str(config / "pgpass")}
    assert seen["umask"] == 0o077
    subprocess.run([str(fetch), "000000010000000000000003", "pg_wal/RECOVERYXLOG"], check=False)
    assert json.loads(record.read_text())["argv"] == ["--config", str(config / "config.json"), "wal-fetch",
                                                      "000000010000000000000003", "pg_wal/RECOVERYXLOG"]
    # Misuse is refused before the engine runs.
    record.unlink()
    wrong = subprocess.run([str(push)], capture_output=True, text=True, check=False)
    assert wrong.returncode == 64 and "usage:" in wrong.stderr and not record.exists()
    # restore_command: a failing wrapper must stop recovery (above 125), never pass for "not archived" (1)
    wrong = subprocess.run([str(fetch)], capture_output=True, text=True, check=False)
    assert wrong.returncode == 255 and "usage:" in wrong.stderr and not record.exists()
    (config / "secrets.env").rename(config / "secrets.env.away")
    lost = subprocess.run([str(fetch), "000000010000000000000003", "pg_wal/RECOVERYXLOG"], capture_output=True,
                          text=True, check=False)
    assert lost.returncode == 255 and not record.exists(), lost.stderr
    (config / "secrets.env.away").rename(config / "secrets.env")
    assert subprocess.run([str(fetch), "000000010000000000000003", "x"], check=False).returncode == 3  # the engine's


# ------------------------------------------------------------------------------------------------ argument specs

@pytest.mark.parametrize("variables, message", [
    ({"pgbackup_wal_level": "minimal"}, "pgbackup_wal_level"),
    ({"pgbackup_wal_archive_mode": "off"}, "pgbackup_wal_archive_mode"),
    ({"pgbackup_wal_archive_timeout": "soon"}, "pgbackup_wal_archive_timeout"),
    ({"pgbackup_wal_restart": "maybe"}, "pgbackup_wal_restart"),
])
def test_argument_spec_rejects_wrong_variables(ansible_ready, variables, message, tmp_path):
    result = apply(tmp_path, variables, check=False)
    assert result.returncode != 0
    output = json.loads(result.stdout)
    failed = [t for play in output["plays"] for t in play["tasks"] if t["hosts"]["localhost"].get("failed")]
    assert failed and "Validating arguments against arg spec" in failed[0]["task"]["name"], failed
    assert message in json.dumps(failed[0]["hosts"]["localhost"])


# ------------------------------------------------------------------------------------------------ a real server

def _cluster(major: int) -> PgCluster:
    # 15 starts at wal_level=minimal (the role raises it to replica); 18 at logical (the role keeps it).
    settings = {"wal_level": "minimal", "max_wal_senders": "0"} if major == 15 else {"wal_level": "logical"}
    try:
        cluster = (debian_pg15 if major == 15 else embedded_pg18)(settings=settings)
    except PgBinariesNotFound as exc:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL %d binaries missing in CI: %s" % (major, exc), pytrace=False)
        pytest.skip("PostgreSQL %d binaries not installed: %s" % (major, exc))
    return cluster.start()


def _show(cluster: PgCluster, name: str) -> str:
    return cluster.scalar("SELECT setting FROM pg_settings WHERE name = '%s'" % name) or ""


def _configured(cluster: PgCluster) -> Dict[str, str]:
    """What postgresql.auto.conf (ALTER SYSTEM) holds."""
    rows = cluster.psql("SELECT name, setting FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf'")
    return dict(rows)


def _needs_psycopg2() -> None:
    try:
        import psycopg2  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("psycopg2 is not installed (requirements-dev.txt): community.postgresql needs it")


def _role_variables(cluster: PgCluster, install: Path, config: Path) -> dict:
    """Connect over TCP with the superuser's password; restart with pg_ctl as the server's OS user."""
    restart = ["runuser", "-u", cluster.os_user, "--", "sh", "-c",
               'cd / && exec "$0" -D "$1" -l "$2" -w -t 60 restart >/dev/null',
               cluster.bin("pg_ctl"), str(cluster.data_dir), str(cluster.log_file)]
    return {"pgbackup_install_dir": str(install), "pgbackup_config_dir": str(config),
            "pgbackup_db_admin_become_user": "", "pgbackup_db_login_host": cluster.host,
            "pgbackup_db_login_port": cluster.port, "pgbackup_db_login_password": cluster.password,
            "pgbackup_wal_install_psycopg": False, "pgbackup_wal_archive_timeout": 60,
            "pgbackup_wal_restart_command": restart}


@pytest.mark.parametrize("major", [15, 18])
def test_role_configures_archiving_restarts_only_when_told_and_is_idempotent(ansible_ready, major, tmp_path):
    _needs_psycopg2()
    cluster = _cluster(major)
    try:
        install = tmp_path / "opt"
        wrapper = str(install / "bin/seawall-pgbackup-wal-push")
        variables = _role_variables(cluster, install, tmp_path / "etc")
        before = {name: _show(cluster, name) for name in ("wal_level", "archive_mode", "archive_command")}
        assert before["archive_mode"] == "off"

        planned = apply(tmp_path, variables, "--check")
        assert stats(planned)["changed"] > 0
        assert _configured(cluster) == {} and not install.exists()
        assert {name: _show(cluster, name) for name in before} == before

        first = apply(tmp_path, variables)
        assert stats(first)["changed"] > 0
        wal_level = "replica" if major == 15 else "logical"
        expected = {"archive_mode": "on", "archive_command": "%s %%p" % wrapper, "archive_timeout": "60"}
        if major == 15:
            expected["wal_level"] = "replica"
        else:
            expected["summarize_wal"] = "on"
        assert _configured(cluster) == expected
        notice = restart_notice(first)
        assert "RESTART NEEDED" in notice and "archive_mode off -> on" in notice
        assert ("wal_level minimal -> replica" in notice) == (major == 15)
        assert _show(cluster, "archive_mode") == "off"  # not restarted
        assert _show(cluster, "archive_timeout") == "60"  # reloaded
        if major >= 17:
            assert _show(cluster, "summarize_wal") == "on"

        second = apply(tmp_path, variables)
        assert stats(second)["changed"] == 0
        assert "RESTART NEEDED" in restart_notice(second)  # still needed, still said

        # A restart command that does not restart this server is found out.
        fake = apply(tmp_path, dict(variables, pgbackup_wal_restart=True, pgbackup_wal_restart_command=["true"]),
                     check=False)
        assert fake.returncode != 0
        assert "the restart did not restart this server" in json.dumps(
            task_results(fake)["Check that wal_level and archive_mode took effect"])

        restarted = apply(tmp_path, dict(variables, pgbackup_wal_restart=True))
        assert stats(restarted)["changed"] == 1  # the restart, nothing else
        assert not restart_notice(restarted)
        assert _show(cluster, "archive_mode") == "on" and _show(cluster, "wal_level") == wal_level
        assert _show(cluster, "archive_command") == "%s %%p" % wrapper

        last = apply(tmp_path, dict(variables, pgbackup_wal_restart=True))
        assert stats(last)["changed"] == 0 and not restart_notice(last)
        assert task_results(last)["Set the archiving settings"].get("skipped") or \
            not task_results(last)["Set the archiving settings"].get("results")

        if major == 15:  # started with max_wal_senders=0 (wal_level was minimal): no receiver can connect
            receiving = apply(tmp_path, dict(variables, pgbackup_wal_receive=True, pgbackup_systemd_manage=False,
                                             pgbackup_systemd_unit_dir=str(tmp_path / "units")), check=False)
            assert receiving.returncode != 0
            assert "needs max_wal_senders > 0 and max_replication_slots > 0 (the server has 0 and" in json.dumps(
                task_results(receiving)["Check that the server allows a replication connection with a slot"])
            assert not (tmp_path / "units").exists()
    finally:
        cluster.destroy(mode="immediate")


def _installed(base: Path, cluster, user: pwd.struct_passwd, pgpass: str):
    """A host as seawall.pgbackup.tooling leaves it with pgbackup_user=postgres (owner.yml), under ``base``: the
    installed command (this worktree's engine through a shim), config.json, secrets.env, pgpass and the repository
    the server's user owns. Returns the install, config and backup directories."""
    install, config, backups = base / "opt", base / "etc", base / "backups"
    (install / "bin").mkdir(parents=True)
    (base / "shim").mkdir()
    (base / "shim/seawall_pgbackup").symlink_to(ENGINE)
    engine = install / "bin/seawall-pgbackup"
    engine.write_text('#!/bin/sh\nPYTHONPATH=%s exec %s -m seawall_pgbackup.cli.run "$@"\n'
                      % (base / "shim", SYSTEM_PYTHON))
    engine.chmod(0o755)
    config.mkdir(mode=0o750)
    os.chown(config, 0, user.pw_gid)
    (config / "config.json").write_text(json.dumps({"backup": {"directory": str(backups), "timezone": "UTC"}}))
    os.chown(config / "config.json", 0, user.pw_gid)
    os.chmod(config / "config.json", 0o640)
    for name, text in (("secrets.env", "DATABASE_URL='%s'\n" % cluster.url(with_password=False)), ("pgpass", pgpass)):
        (config / name).write_text(text)
        os.chmod(config / name, 0o600)
        os.chown(config / name, user.pw_uid, user.pw_gid)
    backups.mkdir(mode=0o700)
    os.chown(backups, user.pw_uid, user.pw_gid)
    return install, config, backups


@pytest.mark.parametrize("major", [15, 18])
def test_the_server_archives_through_the_installed_wrapper(ansible_ready, major, tmp_path):
    """End to end: the files seawall.pgbackup.tooling writes, the role, a restart; then PostgreSQL's archiver runs
    seawall-pgbackup-wal-push as postgres into the repository postgres owns, and wal-fetch gives the segment back."""
    _needs_psycopg2()
    cluster = _cluster(major)
    user = pwd.getpwnam(cluster.os_user)
    base = Path(tempfile.mkdtemp(prefix="seawall-walrole-"))  # the server's user must reach it (not tmp_path)
    try:
        os.chmod(base, 0o755)
        install, config, backups = _installed(base, cluster, user, "")

        # archive_timeout=5: after the role's restart it must hold at once. Without the role's pg_reload_conf() the
        # checkpointer's first sleep after a start is checkpoint_timeout (300 s here), whatever archive_timeout says.
        applied = apply(tmp_path, dict(_role_variables(cluster, install, config), pgbackup_wal_restart=True,
                                       pgbackup_wal_archive_timeout=5))
        assert not restart_notice(applied) and _show(cluster, "archive_mode") == "on"
        assert _show(cluster, "checkpoint_timeout") == "300"
        woken = task_results(applied)["Wake the checkpointer so that archive_timeout counts from now (pg_reload_conf)"]
        assert woken and not woken.get("skipped") and not woken.get("changed"), woken
        cluster.psql("CREATE TABLE early AS SELECT 1 AS x")
        written = cluster.scalar("SELECT pg_walfile_name(pg_current_wal_insert_lsn())") or ""
        deadline = time.monotonic() + 45  # archive_timeout (5 s) and the archiver's pace, not 300 s
        while (cluster.scalar("SELECT last_archived_wal FROM pg_stat_archiver") or "") < written:
            assert time.monotonic() < deadline, "archive_timeout ignored after the restart: %s not archived" % written
            time.sleep(0.5)
        cluster.psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS x")
        walname = cluster.scalar("SELECT pg_walfile_name(pg_switch_wal())") or ""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            archived, failed = cluster.psql("SELECT last_archived_wal, failed_count FROM pg_stat_archiver")[0]
            if (archived or "") >= walname:
                break
            time.sleep(0.3)
        else:
            log = cluster.log_file.read_text(errors="replace")[-3000:]
            pytest.fail("%s not archived (failed %s): %s" % (walname, failed, log))
        records = sorted(n for n in os.listdir(backups / "wal") if n.endswith(".json"))
        assert any(n.startswith(walname + "-") for n in records), records
        assert all(os.stat(backups / "wal" / n).st_uid == user.pw_uid for n in records)
        fetched = base / "fetched"
        fetched.mkdir(mode=0o700)
        os.chown(fetched, user.pw_uid, user.pw_gid)
        fetch = [str(install / "bin/seawall-pgbackup-wal-fetch")]
        got = subprocess.run(["runuser", "-u", cluster.os_user, "--"] + fetch + [walname, str(fetched / "seg")],
                             capture_output=True, text=True, cwd="/", check=False)
        assert got.returncode == 0, got.stderr
        source = subprocess.run(["runuser", "-u", cluster.os_user, "--", "cat",
                                 str(cluster.data_dir / "pg_wal" / walname)], capture_output=True, check=False)
        if source.returncode == 0:  # not yet recycled
            assert (fetched / "seg").read_bytes() == source.stdout
        assert (fetched / "seg").stat().st_size == 16 * 1024 * 1024
        missing = subprocess.run(["runuser", "-u", cluster.os_user, "--"] + fetch + ["0000000100000000000000FF",
                                                                                     str(fetched / "none")],
                                 capture_output=True, text=True, cwd="/", check=False)
        assert missing.returncode == 1 and not missing.stderr.strip()  # restore_command's "not archived"
    finally:
        cluster.destroy(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ wal-receive

RECEIVE_UNIT = "seawall-pgbackup-wal-receive.service"


def _stand_in_engine(path: Path, record: Path) -> None:
    """An engine that records its argv and the environment the wrapper gives it."""
    path.write_text("#!/usr/bin/env python3\nimport json, os, sys\njson.dump({'argv': sys.argv[1:], "
                    "'env': {k: os.environ.get(k) for k in ('DATABASE_URL', 'BACKUP_SMTP_PASSWORD', "
                    "'BACKUP_CONFIG', 'PGPASSFILE')}}, open(%r, 'w'))\n" % str(record))
    path.chmod(0o755)


def _slots(cluster: PgCluster) -> List[str]:
    return [row[0] or "" for row in cluster.psql("SELECT slot_name FROM pg_replication_slots ORDER BY 1")]


def test_wal_receive_service_is_installed_checked_and_removed(ansible_ready, tmp_path):
    """pgbackup_wal_receive on a real PostgreSQL 15 (files only: no systemd in the tests, pgbackup_systemd_manage=false;
    molecule's systemd scenario runs the service): off -> no unit; check mode writes nothing; on -> the wrapper
    (valid shell, the slot, no secret, the engine's wal-receive with the jobs' files) and the unit (the server's user,
    after its service, Restart=always, hardened, accepted by systemd-analyze); a second run changes nothing; off ->
    both removed and the receiver's slot dropped; a bad slot name and a non-systemd host are refused."""
    _needs_psycopg2()
    try:
        cluster = debian_pg15(settings={"wal_level": "replica"}).start()  # max_wal_senders: the default, 10
    except PgBinariesNotFound as exc:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL 15 binaries missing in CI: %s" % exc, pytrace=False)
        pytest.skip("PostgreSQL 15 binaries not installed: %s" % exc)
    try:
        install, config, units = tmp_path / "opt", tmp_path / "etc", tmp_path / "units"
        config.mkdir()
        (config / "secrets.env").write_text(
            "DATABASE_URL='postgresql://backup@db:5432/vtt'\nBACKUP_SMTP_PASSWORD='%s'\n" % SECRET)
        wrapper, unit = install / "bin/seawall-pgbackup-wal-receive", units / RECEIVE_UNIT
        variables = dict(_role_variables(cluster, install, config), pgbackup_systemd_manage=False,
                         pgbackup_systemd_unit_dir=str(units), pgbackup_backup_dir="/srv/pg-repository",
                         pgbackup_wal_service="postgresql@15-main", pgbackup_wal_server_user=cluster.os_user,
                         pgbackup_wal_server_group=pwd.getpwnam(cluster.os_user).pw_name)
        receiving = dict(variables, pgbackup_wal_receive=True, pgbackup_wal_receive_slot="walrole_slot")

        off = apply(tmp_path, variables)
        assert task_results(off)["Drop the receiver's replication slot seawall_pgbackup"].get("skipped")
        assert not unit.exists() and not wrapper.exists()

        planned = apply(tmp_path, receiving, "--check")
        assert task_results(planned)["Write the unit %s" % RECEIVE_UNIT].get("changed")
        assert not unit.exists() and not wrapper.exists()

        first = apply(tmp_path, receiving)
        assert stats(first)["changed"] >= 2
        assert stat.S_IMODE(wrapper.stat().st_mode) == 0o755 and stat.S_IMODE(unit.stat().st_mode) == 0o644
        subprocess.run(["sh", "-n", str(wrapper)], check=True)
        if shutil.which("shellcheck"):
            checked = subprocess.run(["shellcheck", "-s", "sh", str(wrapper)], capture_output=True, text=True,
                                     check=False)
            assert checked.returncode == 0, checked.stdout
        assert SECRET not in wrapper.read_text() and SECRET not in unit.read_text()
        record = tmp_path / "record.json"
        _stand_in_engine(install / "bin/seawall-pgbackup", record)
        subprocess.run([str(wrapper)], check=True, timeout=30)
        seen = json.loads(record.read_text())
        assert seen["argv"] == ["--config", str(config / "config.json"), "wal-receive", "--slot", "walrole_slot"]
        assert seen["env"] == {"DATABASE_URL": "postgresql://backup@db:5432/vtt", "BACKUP_SMTP_PASSWORD": SECRET,
                               "BACKUP_CONFIG": str(config / "config.json"), "PGPASSFILE": str(config / "pgpass")}
        wrong = subprocess.run([str(wrapper), "extra"], capture_output=True, text=True, check=False)
        assert wrong.returncode == 64 and "usage:" in wrong.stderr

        parsed = parse_unit(unit)
        expected = {"Unit.Wants": ["network-online.target postgresql@15-main.service"],
                    "Unit.After": ["network-online.target postgresql@15-main.service"],
                    "Unit.StartLimitIntervalSec": ["0"], "Service.Type": ["simple"],
                    "Service.User": [cluster.os_user], "Service.Group": [variables["pgbackup_wal_server_group"]],
                    "Service.ExecStart": [str(wrapper)], "Service.Restart": ["always"], "Service.RestartSec": ["5"],
                    "Service.KillMode": ["mixed"], "Service.ProtectSystem": ["strict"],
                    "Service.ReadWritePaths": ["/srv/pg-repository"], "Service.NoNewPrivileges": ["yes"],
                    "Install.WantedBy": ["multi-user.target"]}
        assert {key: parsed.get(key) for key in expected} == expected
        assert "Service.RemoveIPC" not in parsed  # the server's user: its IPC objects are PostgreSQL's
        _systemd_accepts(unit, wrapper, tmp_path / "root")

        again = apply(tmp_path, receiving)
        assert stats(again)["changed"] == 0

        # What the engine leaves: its slot (made here as `wal-receive` makes it). A new slot name drops the old slot
        # (it would hold WAL forever), named by the installed wrapper.
        cluster.psql("SELECT pg_create_physical_replication_slot('walrole_slot')")
        cluster.psql("SELECT pg_create_physical_replication_slot('someone_elses')")
        renamed = apply(tmp_path, dict(receiving, pgbackup_wal_receive_slot="walrole_new"))
        assert stats(renamed)["changed"] == 2  # the wrapper, the old slot
        assert "wal-receive --slot walrole_new\n" in wrapper.read_text()
        assert _slots(cluster) == ["someone_elses"]
        # Off: the slot the installed wrapper runs with is dropped, even when the variable no longer names it.
        # Check mode changes nothing.
        cluster.psql("SELECT pg_create_physical_replication_slot('walrole_new')")
        planned_off = apply(tmp_path, variables, "--check")
        assert task_results(planned_off)["Drop the receiver's replication slot walrole_new"].get("changed")
        assert task_results(planned_off)["Remove the unit and the wrapper"].get("changed")
        assert unit.exists() and wrapper.exists() and "walrole_new" in _slots(cluster)
        removed = apply(tmp_path, variables)
        assert stats(removed)["changed"] == 2
        assert not unit.exists() and not wrapper.exists()
        assert _slots(cluster) == ["someone_elses"]
        # Without its unit nothing is the role's: another slot of the default name is left alone.
        cluster.psql("SELECT pg_create_physical_replication_slot('seawall_pgbackup')")
        after = apply(tmp_path, variables)
        assert stats(after)["changed"] == 0 and "seawall_pgbackup" in _slots(cluster)

        bad = apply(tmp_path, dict(receiving, pgbackup_wal_receive_slot="Bad-Slot"), check=False)
        assert bad.returncode != 0
        assert "a slot name is 1 to 63 of a-z, 0-9 and _" in json.dumps(task_results(bad)["Check the replication "
                                                                                          "slot's name"])
        if subprocess.run(["systemctl", "is-system-running"], capture_output=True, check=False).returncode != 0 \
                and not os.path.isdir("/run/systemd/system"):
            managed = apply(tmp_path, dict(receiving, pgbackup_systemd_manage=True), check=False)
            assert managed.returncode != 0
            assert "pgbackup_wal_receive=true needs systemd" in json.dumps(
                task_results(managed)["Check that the host runs systemd"])
        assert not unit.exists()
    finally:
        cluster.destroy(mode="immediate")


def test_the_installed_receiver_archives_until_sigterm_and_its_slot_goes_with_it(ansible_ready, tmp_path):
    """The unit's command, run as systemd runs it (the server's OS user, an empty environment, SIGTERM to the engine
    only): the real `seawall-pgbackup wal-receive` through the role's wrapper, on a PostgreSQL 15 that does not
    archive (archive_mode off), so the segment in the repository came through the receiver; SIGTERM stops it with
    exit 0; turning the receiver off drops the slot the engine made."""
    _needs_psycopg2()
    try:
        cluster = debian_pg15(settings={"wal_level": "replica", "checkpoint_timeout": "1h"}).start()
    except PgBinariesNotFound as exc:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL 15 binaries missing in CI: %s" % exc, pytrace=False)
        pytest.skip("PostgreSQL 15 binaries not installed: %s" % exc)
    user = pwd.getpwnam(cluster.os_user)
    base = Path(tempfile.mkdtemp(prefix="seawall-walrecv-"))  # the server's user must reach it (not tmp_path)
    receiver = None
    try:
        os.chmod(base, 0o755)
        install, config, backups = _installed(base, cluster, user, "%s:%d:*:%s:%s\n" % (
            cluster.host, cluster.port, cluster.superuser, cluster.password))
        variables = dict(_role_variables(cluster, install, config), pgbackup_systemd_manage=False,
                         pgbackup_systemd_unit_dir=str(base / "units"), pgbackup_backup_dir=str(backups),
                         pgbackup_wal_server_user=user.pw_name)
        apply(tmp_path, dict(variables, pgbackup_wal_receive=True))  # no restart: archive_mode stays off
        assert _show(cluster, "archive_mode") == "off"
        execstart = parse_unit(base / "units" / RECEIVE_UNIT)["Service.ExecStart"]
        assert execstart == [str(install / "bin/seawall-pgbackup-wal-receive")]

        receiver = subprocess.Popen(["setpriv", "--reuid=%d" % user.pw_uid, "--regid=%d" % user.pw_gid,
                                     "--clear-groups", "env", "-i", "PATH=/usr/bin:/bin", "HOME=%s" % base,
                                     "LC_ALL=C.UTF-8"] + execstart, cwd="/", stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while "seawall_pgbackup" not in _slots(cluster):
            assert receiver.poll() is None and time.monotonic() < deadline, receiver.communicate(timeout=10)
            time.sleep(0.2)
        cluster.psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS x")
        walname = cluster.scalar("SELECT pg_walfile_name(pg_switch_wal())") or ""
        while not any(n.startswith(walname + "-") and n.endswith(".json") for n in os.listdir(backups / "wal")
                      if (backups / "wal").is_dir()):
            assert receiver.poll() is None and time.monotonic() < deadline, receiver.communicate(timeout=10)
            time.sleep(0.2)
        receiver.terminate()  # systemd's stop with KillMode=mixed: SIGTERM to the main process only
        _out, err = receiver.communicate(timeout=60)
        assert receiver.returncode == 0, err

        apply(tmp_path, variables)
        assert "seawall_pgbackup" not in _slots(cluster)
        assert not (base / "units" / RECEIVE_UNIT).exists()
    finally:
        if receiver is not None and receiver.poll() is None:
            receiver.kill()
            receiver.wait()
        cluster.destroy(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)


def _systemd_accepts(unit: Path, wrapper: Path, root: Path) -> None:
    """systemd-analyze verify (no word) and an exposure level of at most 2.0 ("OK") in a fake root."""
    if not os.access("/usr/bin/systemd-analyze", os.X_OK):
        return
    make_root(root)
    for path in (root / str(wrapper).lstrip("/"),):
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(wrapper, path)
    (root / "etc/systemd/system").mkdir(parents=True, exist_ok=True)
    shutil.copy2(unit, root / "etc/systemd/system" / unit.name)
    (root / "etc/systemd/system/postgresql@.service").write_text(
        "[Unit]\nDescription=PostgreSQL Cluster %i\n[Service]\nType=forking\nExecStart=/bin/true\n")
    verified = subprocess.run(["/usr/bin/systemd-analyze", "verify", "--root=%s" % root,
                               "/etc/systemd/system/%s" % unit.name], capture_output=True, text=True, timeout=60,
                              check=False)
    assert verified.returncode == 0 and not verified.stdout.strip() and not verified.stderr.strip(), \
        verified.stdout + verified.stderr
    security = subprocess.run(["/usr/bin/systemd-analyze", "security", "--offline=true", "--root=%s" % root,
                               "/etc/systemd/system/%s" % unit.name], capture_output=True, text=True, timeout=60,
                              check=False)
    level = [line for line in security.stdout.splitlines() if "Overall exposure level" in line]
    assert level and float(level[0].split(":")[1].split()[0]) <= 2.0, security.stdout + security.stderr


# ------------------------------------------------------------------------------------------------ the schedule

def test_archiving_schedules_the_base_and_the_hourly_incremental(ansible_ready, tmp_path):
    if not os.access("/usr/bin/systemd-analyze", os.X_OK):
        pytest.skip("systemd-analyze is not installed")
    root = tmp_path / "root"
    make_root(root)
    run_playbook(PLAYBOOKS / "render_linux.yml", "-e", "render_root=%s" % root, "-e",
                 '{"pgbackup_wal_archive": true, "pgbackup_user": "postgres", "pgbackup_group": "postgres"}')
    unit_dir = root / "etc/systemd/system"
    engine = "/opt/seawall-pgbackup/bin/seawall-pgbackup"
    lock = "/usr/bin/flock --exclusive --wait 21600 --conflict-exit-code 75 /var/backups/postgresql/.schedule.lock"
    for job, calendar in (("base", "*-*-* 01:30:00"), ("incremental", "*-*-* *:00:00")):
        timer = parse_unit(unit_dir / ("seawall-pgbackup-%s.timer" % job))
        assert timer["Timer.OnCalendar"] == [calendar]
        service = parse_unit(unit_dir / ("seawall-pgbackup-%s.service" % job))
        assert service["Service.ExecStart"] == ["%s %s create --type %s" % (lock, engine, job)]
        assert service["Service.User"] == ["postgres"] and service["Service.Group"] == ["postgres"]
        # stopping a RemoveIPC unit of the server's user would remove the server's shared memory
        assert "Service.RemoveIPC" not in service, service
        verified = subprocess.run(["/usr/bin/systemd-analyze", "verify", "--root=%s" % root,
                                   "/etc/systemd/system/seawall-pgbackup-%s.service" % job],
                                  capture_output=True, text=True, timeout=60, check=False)
        assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr
    document = json.loads((root / "etc/seawall-pgbackup/config.json").read_text())
    assert document["backup"]["types"]["base"] == {"enabled": True, "schedule": "30 1 * * *"}
    assert document["backup"]["types"]["incremental"] == {"enabled": True, "schedule": "0 * * * *"}


def test_windows_schedules_the_hourly_incremental_task(ansible_ready, tmp_path):
    out = tmp_path / "tasks.json"
    run_playbook(PLAYBOOKS / "render_windows.yml", "-e", "render_out=%s" % out,
                 "-e", '{"pgbackup_incremental_enabled": true}')
    by_name = {t["name"]: t for t in json.loads(out.read_text())}
    incremental, base = by_name["seawall-pgbackup-incremental"], by_name["seawall-pgbackup-base"]
    assert incremental["state"] == "present" and base["state"] == "present"
    assert incremental["triggers"] == [
        {"type": "daily", "start_boundary": "2026-01-01T00:00:00", "random_delay": "PT5M",
         "repetition": {"interval": "PT1H", "duration": "P1D", "stop_at_duration_end": False}}]
    assert "-Action create -BackupType incremental " in incremental["actions"][0]["arguments"]
    assert base["triggers"] == [{"type": "daily", "start_boundary": "2026-01-01T01:30:00", "random_delay": "PT5M"}]
    assert "-Action create -BackupType base " in base["actions"][0]["arguments"]
    assert incremental["multiple_instances"] == 2  # an hourly run never starts while the last one still runs


# ------------------------------------------------------------------------------------------------ the playbooks

def _failed(result: subprocess.CompletedProcess) -> List[str]:
    return [t["hosts"]["localhost"].get("msg", "") for play in json.loads(result.stdout)["plays"]
            for t in play["tasks"] if t["hosts"].get("localhost", {}).get("failed")]


@pytest.mark.parametrize("variables, message", [
    ({"pgbackup_restore_recovery_target_time": "2026-11-24T13:00:00Z"}, "needs pgbackup_restore_pgdata"),
    ({"pgbackup_restore_pgdata": "/srv/pitr", "pgbackup_restore_recovery_target": "latest",
      "pgbackup_restore_recovery_target_lsn": "0/3000060"}, "['recovery_target', 'recovery_target_lsn']"),
])
def test_restore_playbook_refuses_wrong_recovery_targets(ansible_ready, variables, message, tmp_path):
    (tmp_path / "vars.json").write_text(json.dumps(dict(
        variables, ansible_python_interpreter="{{ ansible_playbook_python }}",
        pgbackup_database_url="postgresql://backup@127.0.0.1:1/vtt", pgbackup_backup_dir=str(tmp_path))))
    result = run_playbook(REPO / "playbooks/restore.yml", "-c", "local", "--check",
                          "-e", "@%s" % (tmp_path / "vars.json"), check=False)
    assert result.returncode != 0
    [failure] = _failed(result)
    assert message in failure, failure


def test_backup_playbook_archives_only_on_installed_hosts(ansible_ready, tmp_path):
    (tmp_path / "vars.json").write_text(json.dumps({
        "ansible_python_interpreter": "{{ ansible_playbook_python }}", "pgbackup_wal_archive": True,
        "pgbackup_database_url": "postgresql://backup@127.0.0.1:1/vtt", "pgbackup_backup_dir": str(tmp_path)}))
    result = run_playbook(REPO / "playbooks/backup.yml", "-c", "local", "--check",
                          "-e", "@%s" % (tmp_path / "vars.json"), check=False)
    assert result.returncode != 0
    [failure] = _failed(result)
    assert "pgbackup_wal_archive=true needs pgbackup_install=true" in failure, failure


# ------------------------------------------------------------------------------------------------ physical drill

def _drill_processes() -> List[str]:
    found = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout.splitlines()
    return [line for line in found if "seawall-drill" in line and "ps -eo" not in line]


def test_dr_drill_restores_starts_probes_and_stops_a_physical_backup(ansible_ready, sample_db, tmp_path):
    """dr_drill.yml with pgbackup_drill_physical: the newest base backup rebuilt into scratch, started as the server's
    OS user on a private socket, probed, stopped and removed; a failing probe fails the play and still cleans up."""
    from tests.integration import cli  # pylint: disable=import-outside-toplevel
    cluster = sample_db.cluster
    user = pwd.getpwnam(cluster.os_user)
    base = Path(tempfile.mkdtemp(prefix="seawall-drill-test-"))
    try:
        os.chmod(base, 0o755)
        backups, scratch = base / "backups", base / "scratch"
        scratch.mkdir(mode=0o700)
        os.chown(scratch, user.pw_uid, user.pw_gid)
        made = cli.create(cli.cli_env(sample_db.url, str(backups)), "base")
        for root, dirs, files in os.walk(backups):  # the repository belongs to the server's user (a WAL host)
            for name in [root] + [os.path.join(root, n) for n in dirs + files]:
                os.lchown(name, user.pw_uid, user.pw_gid)
        variables = {"ansible_python_interpreter": "/usr/bin/python3", "ansible_become_method": "su",
                     "pgbackup_drill_physical": True, "pgbackup_database_url": sample_db.url,
                     "pgbackup_backup_dir": str(backups), "pgbackup_pg_bin_dir": str(cluster.bin_dir),
                     "pgbackup_drill_os_user": cluster.os_user, "pgbackup_drill_scratch_dir": str(scratch),
                     "pgbackup_drill_probes": ["SELECT count(*) > 0 FROM public.players",
                                               "SELECT count(*) = %s FROM public.campaigns"
                                               % cluster.scalar("SELECT count(*) FROM public.campaigns",
                                                                db=sample_db.name)]}
        (tmp_path / "vars.json").write_text(json.dumps(variables))
        planned = run_playbook(REPO / "playbooks/dr_drill.yml", "-c", "local", "--check",
                               "-e", "@%s" % (tmp_path / "vars.json"))
        assert "Would drill %s" % made["id"] in planned.stdout
        drilled = run_playbook(REPO / "playbooks/dr_drill.yml", "-c", "local", "-e", "@%s" % (tmp_path / "vars.json"))
        assert "Physical DR drill OK on localhost: %s (base," % made["id"] in drilled.stdout
        assert "2 probe(s) true in %s" % sample_db.name in drilled.stdout
        assert not os.listdir(scratch) and not _drill_processes()

        variables["pgbackup_drill_probes"] = ["SELECT count(*) = -1 FROM public.players"]
        (tmp_path / "vars.json").write_text(json.dumps(variables))
        failed = run_playbook(REPO / "playbooks/dr_drill.yml", "-c", "local", "-e", "@%s" % (tmp_path / "vars.json"),
                              check=False)
        assert failed.returncode != 0
        failed_tasks = [t["task"]["name"] for play in json.loads(failed.stdout)["plays"] for t in play["tasks"]
                        if t["hosts"].get("localhost", {}).get("failed")]
        assert failed_tasks == ["Run the probes on the scratch server"], failed_tasks
        assert not os.listdir(scratch) and not _drill_processes()
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ the backup role

def test_tooling_gives_the_backup_role_what_physical_backups_need(ansible_ready, pg15, tmp_path):
    """With pgbackup_wal_archive, the backup role of seawall.pgbackup.tooling gets REPLICATION and may run
    pg_switch_wal() (the WAL-method incremental); a second run changes nothing."""
    _needs_psycopg2()
    role = "walrole_%s" % os.urandom(4).hex()
    pg15.create_role(role, password="pw-%s" % role)
    pg15.psql("ALTER ROLE %s NOREPLICATION" % role)
    try:
        variables = {"pgbackup_database_url": "postgresql://%s@%s:%d/postgres" % (role, pg15.host, pg15.port),
                     "pgbackup_wal_archive": True, "pgbackup_db_admin_become_user": "",
                     "pgbackup_db_login_host": pg15.host, "pgbackup_db_login_port": pg15.port,
                     "pgbackup_db_login_password": pg15.password}
        playbook = write_playbook(tmp_path, [{"name": "The backup role", "ansible.builtin.include_role": {
            "name": "seawall.pgbackup.tooling", "tasks_from": "database.yml"}}], variables)
        first = run_playbook(playbook, "-e", "@%s" % (tmp_path / "apply-vars.json"))
        assert stats(first)["changed"] >= 2
        assert pg15.scalar("SELECT rolreplication FROM pg_roles WHERE rolname = '%s'" % role) == "t"
        assert pg15.scalar("SELECT has_function_privilege('%s', 'pg_catalog.pg_switch_wal()', 'EXECUTE')"
                           % role) == "t"
        again = run_playbook(playbook, "-e", "@%s" % (tmp_path / "apply-vars.json"))
        assert stats(again)["changed"] == 0
    finally:
        pg15.psql("DROP OWNED BY %s; DROP ROLE %s" % (role, role))


# ------------------------------------------------------------------------------------------------ PITR playbook

def test_restore_playbook_recovers_to_a_time_from_the_archive(ansible_ready):
    """restore.yml's PITR mode on a real archiving PostgreSQL 15 (as the server's OS user, who owns the repository):
    a time between two committed batches restores exactly the first; a target the archive cannot reach is refused
    before anything is written."""
    from tests.support.archiving import archiving  # pylint: disable=import-outside-toplevel
    with archiving(15) as arch:
        pg = arch.cluster
        pg.create_db("pitr")
        pg.psql("CREATE TABLE pitr_rows (batch int, n int)", db="pitr")
        env = {"DATABASE_URL": pg.url("pitr")}
        arch.cli_as_server("create", "--type", "base", "--json", env=env, check=True)
        pg.psql("INSERT INTO pitr_rows SELECT 1, g FROM generate_series(1, 100) g", db="pitr")
        arch.switch_wal()
        time.sleep(1.1)
        between = pg.scalar("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                            "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')") or ""
        time.sleep(1.1)
        pg.psql("INSERT INTO pitr_rows SELECT 2, g FROM generate_series(1, 100) g", db="pitr")
        arch.wait_archived(arch.switch_wal())
        # The installed command, as restore_command will run it (found on PATH by the engine).
        bin_dir = arch.owned_dir("bin")
        command = bin_dir / "seawall-pgbackup"
        command.write_text('#!/bin/sh\nPYTHONPATH=%s exec %s -m seawall_pgbackup.cli.run "$@"\n'
                           % (arch.env["PYTHONPATH"], SYSTEM_PYTHON))
        command.chmod(0o755)
        where = arch.owned_dir("restored")
        variables = {"ansible_python_interpreter": SYSTEM_PYTHON, "ansible_become": True,
                     "ansible_become_method": "su", "ansible_become_user": arch.user.pw_name,
                     "pgbackup_database_url": pg.url("pitr"), "pgbackup_backup_dir": str(arch.backup_dir),
                     "pgbackup_config_file": str(arch.config_file), "pgbackup_restore_pgdata": str(where / "data"),
                     "pgbackup_environment": {"PATH": "%s:/usr/bin:/bin" % bin_dir, "HOME": str(arch.base),
                                              "TZ": "UTC"}}
        vars_file = arch.base / "vars.json"
        vars_file.write_text(json.dumps(dict(variables, pgbackup_restore_recovery_target_time="2999-01-01T00:00:00Z")))
        refused = run_playbook(REPO / "playbooks/restore.yml", "-c", "local", "-e", "@%s" % vars_file, check=False)
        assert refused.returncode != 0 and "no commit after that time" in refused.stdout, refused.stdout[-3000:]
        assert not (where / "data").exists()

        vars_file.write_text(json.dumps(dict(variables, pgbackup_restore_recovery_target_time=between)))
        done = run_playbook(REPO / "playbooks/restore.yml", "-c", "local", "-e", "@%s" % vars_file)
        assert "into the data directory %s" % (where / "data") in done.stdout
        assert "Recovery to recovery_target_time = %s" % between in done.stdout
        assert str(command) in (where / "data/postgresql.auto.conf").read_text()  # restore_command: wal-fetch
        again = run_playbook(REPO / "playbooks/restore.yml", "-c", "local", "-e", "@%s" % vars_file)
        assert stats(again)["changed"] == 0  # idempotent on the backup id in the data directory

        restored = PgCluster(pg.bin_dir, name="pitr-play", base_dir=where, password=pg.password)
        for folder in (restored.socket_dir, restored.log_file.parent):
            folder.mkdir(mode=0o700, exist_ok=True)
            os.chown(folder, arch.user.pw_uid, arch.user.pw_gid)
        restored._initialized = True  # pylint: disable=protected-access
        restored.start()
        try:
            deadline = time.monotonic() + 90
            while restored.scalar("SELECT pg_is_in_recovery()") != "f" and time.monotonic() < deadline:
                time.sleep(0.2)
            assert restored.psql("SELECT batch, count(*) FROM pitr_rows GROUP BY batch ORDER BY batch",
                                 db="pitr") == [("1", "100")]
        finally:
            restored.destroy()


# ------------------------------------------------------------------------------------------------ the jobs

@pytest.mark.parametrize("major", [15, 18])
def test_the_scheduled_base_and_hourly_incremental_jobs_run_as_the_server_user(ansible_ready, major, tmp_path):
    """The base and incremental jobs exactly as the schedule role defines them (schedule_jobs with archiving on),
    run through the role's run-job as the server's OS user (as cron does, and as the systemd units run the same
    command), on a server archiving into the repository it owns: a base, then an incremental whose parent it is
    (native on 18, the archived WAL on 15)."""
    import sys  # pylint: disable=import-outside-toplevel
    collections = str(REPO / ".collections")
    if collections not in sys.path:
        sys.path.insert(0, collections)
    from ansible_collections.seawall.pgbackup.plugins.filter.schedule_jobs import \
        schedule_jobs  # pylint: disable=import-outside-toplevel
    from tests.support.archiving import archiving  # pylint: disable=import-outside-toplevel

    jobs = {j["name"]: j for j in schedule_jobs({"base": "30 1 * * *", "incremental": "0 * * * *"}, base=True,
                                                incremental=True)}
    assert jobs["base"]["enabled"] and jobs["incremental"]["enabled"]
    with archiving(major) as arch:
        pg = arch.cluster
        pg.create_db("jobs")
        pg.psql("CREATE TABLE t AS SELECT g AS n FROM generate_series(1, 1000) g", db="jobs")
        base = arch.base
        libexec, config = arch.owned_dir("libexec"), arch.owned_dir("etc")
        engine = libexec / "seawall-pgbackup"
        engine.write_text('#!/bin/sh\nPYTHONPATH=%s exec %s -m seawall_pgbackup.cli.run "$@"\n'
                          % (arch.env["PYTHONPATH"], SYSTEM_PYTHON))
        engine.chmod(0o755)
        arch.owned_file(config, "config.json", arch.config_file.read_bytes())
        arch.owned_file(config, "secrets.env", ("DATABASE_URL='%s'\n" % pg.url("jobs", with_password=False)).encode())
        arch.owned_file(config, "pgpass", ("%s:%d:*:postgres:%s\n" % (pg.host, pg.port, pg.password)).encode())
        for folder in (arch.backup_dir, arch.backup_dir / "logs"):  # as seawall.pgbackup.tooling makes them
            folder.mkdir(mode=0o700, exist_ok=True)
            os.chown(folder, arch.user.pw_uid, arch.user.pw_gid)
        playbook = write_playbook(tmp_path, [{
            "name": "Render the job scripts", "ansible.builtin.template": {
                "src": str(REPO / "roles/schedule/templates/{{ item }}.sh.j2"), "dest": "%s/{{ item }}" % libexec,
                "mode": "0755"},
            "loop": ["record-failure", "run-job"]}], {
            "pgbackup_schedule_libexec": str(libexec), "pgbackup_schedule_engine": str(engine),
            "pgbackup_lock_wait": 60, "pgbackup_config_dir": str(config), "pgbackup_user": arch.user.pw_name,
            "pgbackup_backup_dir": str(arch.backup_dir)})
        run_playbook(playbook, "-e", "@%s" % (tmp_path / "apply-vars.json"))

        def run_job(name: str) -> subprocess.CompletedProcess:
            return subprocess.run(["runuser", "-u", arch.user.pw_name, "--", "env", "-i", "PATH=/usr/bin:/bin",
                                   "HOME=%s" % base, "LC_ALL=C.UTF-8", str(libexec / "run-job"), name]
                                  + jobs[name]["arguments"], capture_output=True, text=True, cwd="/", timeout=600,
                                  check=False)

        made = run_job("base")
        assert made.returncode == 0, made.stderr
        pg.psql("UPDATE t SET n = n + 1 WHERE n % 100 = 0", db="jobs")
        hourly = run_job("incremental")
        assert hourly.returncode == 0, hourly.stderr
        listed = json.loads(arch.cli_as_server("list", "--json", check=True).stdout)
        by_type = {b["type"]: b for b in listed}
        assert set(by_type) == {"base", "incremental"}
        assert by_type["incremental"]["parent"] == by_type["base"]["id"]
        assert not (arch.backup_dir / "logs/backup-failures.log").exists()
