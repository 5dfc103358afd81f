"""Bad input and faults: each gets one exact line and its kind's exit code (docs/errors.md), and earlier
backups stay as they were."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from seawall_pgbackup.core.errors import (BackupError, ClientToolError, ConfigError, ConnectionFailed,
                                          DestinationError, KeyMissing, LockedError, NotFound, ResourceError,
                                          RestoreError, VerifyError)
from tests.integration import cli
from tests.support.pgcluster import free_port

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def failed(args, env, kind) -> str:
    """Run a command that must fail with ``kind``'s exit code; its one error line."""
    proc = cli.run(args, env, check=False)
    line = cli.error_line(proc)
    assert proc.returncode == kind.exit_code, (proc.returncode, kind.__name__, line)
    return line


def snapshot(backup_dir) -> dict:
    """sha256 of every backup file (logs and the lock file excluded)."""
    found = {}
    for root, _dirs, files in os.walk(backup_dir):
        if os.path.basename(root) == "logs":
            continue
        for name in files:
            if name == ".lock":
                continue
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, backup_dir)] = hashlib.sha256(handle.read()).hexdigest()
    return found


@pytest.fixture(name="repo")
def _repo(pg15, tmp_path):
    """A database on PostgreSQL 15 with one good full backup already taken."""
    from tests.support import load_sample

    name = "faults_%d" % os.getpid()
    load_sample(pg15, name)
    backup_dir = tmp_path / "backups"
    env = cli.cli_env(pg15.url(name), backup_dir)
    first = cli.create(env, "full")
    before = snapshot(backup_dir)
    yield {"env": env, "dir": backup_dir, "first": first, "before": before, "cluster": pg15, "db": name}
    pg15.drop_db(name)


def assert_untouched(repo):
    """The earlier backup is intact, still listed, and nothing else was left behind."""
    assert snapshot(repo["dir"]) == repo["before"]
    assert [b["id"] for b in cli.listing(repo["env"])] == [repo["first"]["id"]]


def test_wrong_password(repo):
    cluster = repo["cluster"]
    env = dict(repo["env"], DATABASE_URL=cluster.url(repo["db"], password="not-the-password"))
    line = failed(["create"], env, ConnectionFailed)
    assert line == ('seawall-pgbackup: error: cannot connect to server 127.0.0.1:%d, database %s, user postgres: '
                    'password authentication failed for user "postgres"' % (cluster.port, repo["db"]))
    assert "not-the-password" not in line
    assert_untouched(repo)
    with open(os.path.join(repo["dir"], "logs", "backup-failures.log"), encoding="utf-8") as handle:
        failures = handle.read()
    assert "step=connect" in failures and "not-the-password" not in failures
    with open(os.path.join(repo["dir"], "logs", "last-run-create-full.json"), encoding="utf-8") as handle:
        record = json.load(handle)
    assert (record["status"], record["step"], record["exit_code"]) == ("failed", "connect", ConnectionFailed.exit_code)


def test_unreachable_server(repo):
    port = free_port()
    env = dict(repo["env"], DATABASE_URL="postgresql://postgres:pw@127.0.0.1:%d/app" % port)
    line = failed(["create"], env, ConnectionFailed)
    assert line == "seawall-pgbackup: error: cannot connect to server 127.0.0.1:%d, database app, user postgres: " \
                   "Connection refused" % port
    assert_untouched(repo)


def test_unknown_type(repo):
    line = failed(["create", "--type", "weekly"], repo["env"], ConfigError)
    kinds = "full, schema, data, globals, base, incremental"
    assert line == "seawall-pgbackup: error: type='weekly' is not valid: use one of %s" % kinds
    env = dict(repo["env"], BACKUP_TYPE="hourly")
    line = failed(["create"], env, ConfigError)
    assert line == "seawall-pgbackup: error: BACKUP_TYPE='hourly' is not valid: use one of %s" % kinds
    assert_untouched(repo)


def test_unwritable_backup_directory(repo, tmpfs, tmp_path):
    target = tmpfs(tmp_path / "readonly", "ro,size=1m")
    env = dict(repo["env"], BACKUP_DIR=str(target / "backups"))
    line = failed(["create"], env, BackupError)
    assert line == "seawall-pgbackup: error: cannot create backup directory %s is not writable: Read-only file " \
                   "system" % (target / "backups")
    assert_untouched(repo)


def test_full_backup_directory(repo, tmpfs, tmp_path):
    size = sum(f["size"] for f in repo["first"]["files"])
    # Room for one backup and its manifest, not for two.
    target = tmpfs(tmp_path / "small", "size=%dk,mode=0700" % ((size * 3 // 2) // 1024 + 64))
    env = dict(repo["env"], BACKUP_DIR=str(target))
    good = cli.create(env, "full")
    kept = snapshot(target)
    line = failed(["create"], env, ResourceError)  # a full disk: nothing is wrong with the backup
    assert line.startswith("seawall-pgbackup: error: cannot write %s/full/" % target)
    assert line.endswith(".partial: no space left on device")
    with open(os.path.join(target, "logs", "backup-failures.log"), encoding="utf-8") as handle:
        assert "step=space" in handle.read()  # the notification's hint is about disk space, not pg_dump
    assert snapshot(target) == kept  # no partial file left, the good backup intact
    assert [b["id"] for b in cli.listing(env)] == [good["id"]]
    assert_untouched(repo)


@pytest.fixture(name="big_db")
def _big_db(pg15):
    """A pgbench database large enough that a dump takes a few seconds."""
    name = "faults_big"
    if name not in pg15.databases():
        pg15.create_db(name)
        pg15.run("pgbench", "-i", "-q", "-s", "8", "--unlogged-tables", name, db=name)
    return pg15.url(name)


def _children_named(pid: int, name: str) -> list:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, encoding="utf-8") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            with open("/proc/%s/comm" % entry, encoding="utf-8") as handle:
                comm = handle.read().strip()
        except OSError:
            continue
        if int(fields[1]) == pid and comm == name:
            found.append(int(entry))
    return found


def _start_create(env):
    return subprocess.Popen(cli.COMMAND + ["create"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)


def _wait_for_partial(backup_dir, timeout=60, other_than=None) -> str:
    deadline = time.monotonic() + timeout
    full = os.path.join(backup_dir, "full")
    while time.monotonic() < deadline:
        for name in os.listdir(full) if os.path.isdir(full) else []:
            path = os.path.join(full, name)
            if name.endswith(".partial") and path != other_than and os.path.getsize(path) > 256 * 1024:
                return path
        time.sleep(0.05)
    raise AssertionError("no growing .partial file appeared")


def test_pg_dump_killed_midway(repo, big_db):
    env = dict(repo["env"], DATABASE_URL=big_db)
    proc = _start_create(env)
    _wait_for_partial(repo["dir"])
    dumps = _children_named(proc.pid, "pg_dump")
    assert dumps, "pg_dump was not running"
    os.kill(dumps[0], signal.SIGKILL)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == BackupError.exit_code == 3
    assert err.strip() == "seawall-pgbackup: error: pg_dump was killed by SIGKILL"
    assert_untouched(repo)


def test_tool_killed_midway_leaves_nothing_listed_and_next_run_cleans_up(repo, big_db):
    env = dict(repo["env"], DATABASE_URL=big_db)
    proc = _start_create(env)
    partial = _wait_for_partial(repo["dir"])
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert os.path.exists(partial)  # SIGKILL gives no chance to clean up ...
    assert [b["id"] for b in cli.listing(env)] == [repo["first"]["id"]]  # ... but nothing is listed
    never = repo["cluster"].url("never_created", with_password=False)
    refused = failed(["restore", partial, "--target-url", never], env, NotFound)
    assert refused == ("seawall-pgbackup: error: %s belongs to no complete backup (no manifest names "
                       "it): it is not restorable" % partial)
    assert "never_created" not in repo["cluster"].databases()
    # SIGTERM (a timer being stopped) unwinds and removes its own partial file.
    # in the same second as the killed run, this one gets another id: the leftover's name is taken
    proc = _start_create(env)
    term_partial = _wait_for_partial(repo["dir"], other_than=partial)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130 and "interrupted" in err
    assert not os.path.exists(term_partial)
    # The killed run's partial is removed by the first run after the grace period (issue #11: never at once).
    assert os.path.exists(partial)
    second = cli.create(dict(repo["env"], BACKUP_LEFTOVER_GRACE="0s"), "full")
    assert not os.path.exists(partial)
    assert [b["id"] for b in cli.listing(env)] == [repo["first"]["id"], second["id"]]
    with open(os.path.join(repo["dir"], "logs", "backup.log"), encoding="utf-8") as handle:
        assert "removed-incomplete path=%s" % partial in handle.read()


def test_client_older_than_server(pg18, tmp_path):
    pg18.create_db("faults_old_client")
    try:
        env = cli.cli_env(pg18.url("faults_old_client"), tmp_path / "b", BACKUP_PG_BIN_DIR="/usr/lib/postgresql/15/bin")
        line = failed(["create"], env, ClientToolError)
        assert line == ("seawall-pgbackup: error: client tools are older than the server (PostgreSQL 18): found pg_dump "
                        "%s in /usr/lib/postgresql/15/bin; install the PostgreSQL 18 client or set BACKUP_PG_BIN_DIR"
                        % subprocess.run(["/usr/lib/postgresql/15/bin/pg_dump", "--version"], capture_output=True,
                                         text=True, check=True).stdout.split()[2])
        assert not os.listdir(tmp_path / "b" / "full")
    finally:
        pg18.drop_db("faults_old_client")


def test_one_run_at_a_time(repo):
    from seawall_pgbackup.repo.catalog import Repository

    with Repository(str(repo["dir"])).lock():
        line = failed(["create"], repo["env"], LockedError)
    assert LockedError.exit_code == 75  # the timers' queue lock (flock --conflict-exit-code 75) says the same
    assert line.startswith("seawall-pgbackup: error: another seawall-pgbackup run holds %s/.lock (pid %d)"
                           % (repo["dir"], os.getpid()))
    assert_untouched(repo)


def test_restore_refuses_a_non_empty_target_and_a_failed_restore_changes_nothing(repo):
    cluster, env = repo["cluster"], repo["env"]
    backup_id = repo["first"]["id"]
    cluster.create_db("occupied")
    cluster.psql("CREATE TABLE keep_me (x int); INSERT INTO keep_me VALUES (42)", "occupied")
    try:
        line = failed(["restore", backup_id, "--target-url", cluster.url("occupied", with_password=False)], env,
                      RestoreError)
        assert line == ("seawall-pgbackup: error: target database occupied already holds 1 user objects: restore "
                        "into another database or pass --clean to replace it")
        assert cluster.scalar("SELECT x FROM keep_me", "occupied") == "42"
        # A restore that fails half-way (a role the archive needs is missing) leaves the target as it was.
        cluster.psql("ALTER TABLE IF EXISTS nothing RENAME TO nothing2; "
                     "CREATE ROLE vtt_tmp_owner; ", "occupied")
        corrupt = dict(env)
        manifest_path = os.path.join(repo["dir"], "full", backup_id + ".json")
        with open(manifest_path, encoding="utf-8") as handle:
            original = handle.read()
        cluster.psql("ALTER ROLE vtt_app RENAME TO vtt_app_away")
        try:
            occupied = cluster.url("occupied", with_password=False)
            line = failed(["restore", backup_id, "--target-url", occupied, "--clean"], corrupt, RestoreError)
            assert 'role "vtt_app" does not exist' in line
        finally:
            cluster.psql("ALTER ROLE vtt_app_away RENAME TO vtt_app; DROP ROLE vtt_tmp_owner")
        assert cluster.scalar("SELECT x FROM keep_me", "occupied") == "42"
        assert not [d for d in cluster.databases() if d.endswith("__seawall_restore")]
        with open(manifest_path, encoding="utf-8") as handle:
            assert handle.read() == original
        cli.run(["restore", backup_id, "--target-url", cluster.url("occupied", with_password=False), "--clean"], env)
        assert cluster.scalar("SELECT to_regclass('keep_me') IS NULL", "occupied") == "t"
    finally:
        cluster.drop_db("occupied")


def test_verify_names_the_damaged_file(repo):
    env = repo["env"]
    first = repo["first"]
    dump = os.path.join(repo["dir"], "full", first["files"][0]["name"])
    ok = cli.run(["verify", first["id"]], env)
    assert ok.stdout.startswith("OK  %s: checksums match" % first["id"])
    with open(dump, "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0x01]))
    line = failed(["verify", first["id"]], env, VerifyError)
    assert line == ("seawall-pgbackup: error: 1 of 1 backups failed verification: %s: file %s does not match its "
                    "sha256 (corrupted)" % (first["id"], dump))
    # A backup known bad is no longer offered for restore.
    never = repo["cluster"].url("never_created", with_password=False)
    refused = failed(["restore", "latest", "--target-url", never], env, NotFound)
    assert refused.startswith("seawall-pgbackup: error: no good full backup")
    with open(dump, "r+b") as handle:
        handle.truncate(1000)
    line = failed(["verify", first["id"], "--level", "checksum"], env, VerifyError)
    assert "has 1000 bytes, the manifest recorded %d (truncated or replaced)" % first["files"][0]["size"] in line


def test_a_failed_copy_is_a_destination_error_and_the_local_backup_stays(repo, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    config = tmp_path / "config.json"
    nas = {"type": "local", "path": str(blocker / "copies")}
    config.write_text(json.dumps({"backup": {"destinations": {"nas": nas}}}))
    env = dict(repo["env"], BACKUP_DIR=str(tmp_path / "copied"), BACKUP_CONFIG=str(config))
    line = failed(["create"], env, DestinationError)
    assert line.startswith("seawall-pgbackup: error: backup full-") and "the copy to destination 'nas' failed" in line
    assert line.endswith("; run 'seawall-pgbackup sync' to retry")  # the CLI's words for the hint
    assert len(cli.listing(env)) == 1  # complete and listed
    with open(os.path.join(tmp_path, "copied", "logs", "last-run-create-full.json"), encoding="utf-8") as handle:
        record = json.load(handle)
    assert (record["status"], record["exit_code"]) == ("failed", DestinationError.exit_code)
    assert "the copy to destination 'nas' failed" in record["error"] and "sync" not in record["error"]


def test_encryption_without_a_key_is_a_configuration_error_and_a_missing_key_its_own_kind(repo, tmp_path):
    env = dict(repo["env"], BACKUP_DIR=str(tmp_path / "sealed"), BACKUP_ENCRYPTION="true")
    line = failed(["create"], env, ConfigError)
    assert line == ("seawall-pgbackup: error: BACKUP_ENCRYPTION=true needs a key: set BACKUP_ENCRYPTION_KEY_FILE or "
                    "BACKUP_ENCRYPTION_KEYRING (create one with 'seawall-pgbackup keygen --keyring DIR')")
    keyring = tmp_path / "keyring"
    cli.run(["keygen", "--keyring", str(keyring)], env)
    sealed = cli.create(dict(env, BACKUP_ENCRYPTION_KEYRING=str(keyring)), "full")
    line = failed(["verify", sealed["id"]], env, KeyMissing)  # the key is not on this host: the backup is fine
    assert "key id %s, which is not in the keyring" % sealed["encryption"]["key_id"] in line


def _module(name: str, args: str, env: dict, succeed: bool = False, check_mode: bool = False) -> dict:
    """One module run through ``ansible`` (ad hoc, local): the module's result (failed unless ``succeed``)."""
    ansible = os.path.join(os.path.dirname(sys.executable), "ansible")
    if not os.path.exists(ansible):
        pytest.skip("ansible is not installed beside this Python")
    run_env = {k: v for k, v in env.items() if not k.startswith("ANSIBLE_")}
    run_env.update(ANSIBLE_CONFIG=os.path.join(REPO_ROOT, "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="json",
                   ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([ansible, "localhost", "-c", "local", "-m", "seawall.pgbackup." + name, "-a", args]
                          + (["--check"] if check_mode else []),
                          cwd=REPO_ROOT, env=run_env, capture_output=True, text=True, timeout=300, check=False)
    assert (proc.returncode == 0) == succeed, proc.stdout
    return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_modules_report_the_kind_and_say_their_hints_in_option_names(repo, tmp_path):
    never = repo["cluster"].url("never_created", with_password=False)
    result = _module("pg_backup_restore", "backup=nope target_url=%s" % never, repo["env"])
    assert (result["error_kind"], result["error_exit_code"], result["step"]) == (
        "not-found", NotFound.exit_code, "select")
    assert result["msg"] == "no backup with id 'nope' in %s (see pg_backup_info)" % repo["dir"]
    port = free_port()
    env = dict(repo["env"], DATABASE_URL="postgresql://postgres@127.0.0.1:%d/app" % port)
    result = _module("pg_backup", "type=full backup_dir=%s" % (tmp_path / "b"), env)
    assert (result["error_kind"], result["error_exit_code"]) == ("unreachable", ConnectionFailed.exit_code)
    assert result["step"] == "connect"
    assert "--" not in result["msg"] and "Connection refused" in result["msg"]


def test_check_mode_connects_and_predicts_what_the_run_would_fail_on(repo, tmp_path):
    """pg_backup --check is a preflight (issue 13): a wrong password, an unreachable server, a role that cannot read
    a table, a repository it cannot create fail in check mode as the run would; a good setup reports what it
    checked, and nothing is written."""
    cluster, target = repo["cluster"], tmp_path / "fresh"
    args = "type=full backup_dir=%s" % target
    good = _module("pg_backup", args, repo["env"], succeed=True, check_mode=True)
    assert good["changed"] is True and not target.exists()
    assert [c.split(" ")[0] for c in good["preflight"]] == ["backup", "connected", "client"], good["preflight"]
    assert "server 127.0.0.1:%d, database %s, user postgres" % (cluster.port, repo["db"]) in good["preflight"][1]

    wrong = dict(repo["env"], DATABASE_URL=cluster.url(repo["db"], password="not-the-password"))
    # the command's --dry-run is the same engine preflight
    dry = cli.run(["create", "--dry-run"], repo["env"])
    assert dry.returncode == 0 and dry.stdout.count("OK  ") == 3, dry.stdout
    assert failed(["create", "--dry-run"], wrong, ConnectionFailed).endswith('for user "postgres"')
    result = _module("pg_backup", args, wrong, check_mode=True)
    assert result["error_kind"] == "unreachable" and "password authentication failed" in result["msg"]
    assert "server 127.0.0.1:%d, database %s, user postgres" % (cluster.port, repo["db"]) in result["msg"]
    assert "not-the-password" not in json.dumps(result)
    nowhere = dict(repo["env"], DATABASE_URL="postgresql://postgres@127.0.0.1:%d/app" % free_port())
    assert "Connection refused" in _module("pg_backup", args, nowhere, check_mode=True)["msg"]

    role = "preflight_%d" % os.getpid()
    cluster.create_role(role, password="pw-%d" % os.getpid())
    cluster.psql("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM %s; GRANT CONNECT ON DATABASE %s TO %s"
                 % (role, repo["db"], role), db=repo["db"])
    try:
        limited = dict(repo["env"], DATABASE_URL=cluster.url(repo["db"], user=role))
        result = _module("pg_backup", args, limited, check_mode=True)
        assert result["error_kind"] == "config" and "role %s cannot read lore.factions" % role in result["msg"], result
        assert "pg_dump would fail" in result["msg"] and "and more in database" in result["msg"]
        result = _module("pg_backup", "type=base backup_dir=%s" % target, limited, check_mode=True)
        assert "needs REPLICATION" in result["msg"], result
    finally:
        cluster.psql("DROP OWNED BY %s; DROP ROLE %s" % (role, role), db=repo["db"])
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    result = _module("pg_backup", "type=full backup_dir=%s" % (a_file / "backups"), repo["env"], check_mode=True)
    assert "cannot be created: %s is not a directory" % a_file in result["msg"] and not target.exists(), result
