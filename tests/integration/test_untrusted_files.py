"""Issue #11, cases 1, 2, 3 and the file parts of 10: the repository is untrusted input.

Every test plants a hostile setup (crafted manifests, foreign files, symlinks, a directory another user
owns, killed runs) and runs the real command; files outside the repository (canaries) must survive, and
every refusal is one line with its kind's exit code. Run as root (the CI user) and, where it matters, as an
unprivileged user (``setpriv`` to ``nobody``).
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from seawall_pgbackup.config.connection import runtime_dir
from seawall_pgbackup.core.errors import ConfigError
from seawall_pgbackup.repo.catalog import Repository
from tests.integration import cli

OLD = time.time() - 3 * 86400  # older than any grace period
CANARY = b"not yours\n"


def _sha(path) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _age(path, stamp: float = OLD) -> None:
    os.utime(path, (stamp, stamp), follow_symlinks=False)


def _failed(args, env, kind) -> str:
    proc = cli.run(args, env, check=False)
    line = cli.error_line(proc)
    assert proc.returncode == kind.exit_code, (proc.returncode, line)
    return line


@pytest.fixture(name="db")
def _db(pg15):
    name = "untrusted_%s" % uuid.uuid4().hex[:8]
    pg15.create_db(name)
    pg15.psql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'row ' || g "
              "FROM generate_series(1, 50) g", db=name)
    yield pg15, name
    pg15.drop_db(name)
    for other in [d for d in pg15.databases() if d.startswith(name)]:
        pg15.drop_db(other)


@pytest.fixture(name="canaries")
def _canaries(tmp_path):
    """A file next to the backup directory and one in /tmp: nothing may touch them."""
    beside = tmp_path / "canary"
    beside.write_bytes(CANARY)
    fd, in_tmp = tempfile.mkstemp(prefix="seawall-canary-")
    os.write(fd, CANARY)
    os.close(fd)
    paths = [str(beside), in_tmp]
    for path in paths:
        _age(path)
    before = {p: (_sha(p), os.stat(p).st_mtime) for p in paths}
    yield paths
    after = {p: (_sha(p), os.stat(p).st_mtime) for p in paths if os.path.exists(p)}
    os.unlink(in_tmp)
    assert after == before, "a file outside the repository was touched"


def _crafted_manifests(kind_dir: Path, canaries) -> list:
    """Manifests that name files outside the repository or carry a crafted id; all aged past the grace."""
    beside, in_tmp = canaries
    size = len(CANARY)
    sha = hashlib.sha256(CANARY).hexdigest()
    rel = os.path.relpath(beside, kind_dir)
    docs = {
        "full-app-20200101T000000Z.json": {"id": "full-app-20200101T000000Z", "files": [rel]},
        "full-app-20200102T000000Z.json": {"id": "full-app-20200102T000000Z", "files": [in_tmp]},
        "full-app-20200103T000000Z.json": {"id": "../../../canary", "files": ["x.dump"]},
        "full-app-20200104T000000Z.json": {"id": "full-app-20200104T000000Z",
                                           "files": ["full-app-20200104T000000Z.dump/../../../canary"]},
    }
    written = []
    for name, doc in docs.items():
        manifest = {"format_version": 1, "id": doc["id"], "type": "full", "status": "ok", "database": "app",
                    "created_at": "2020-01-01T00:00:00.000000Z", "finished_at": "2020-01-01T00:00:01.000000Z",
                    "files": [{"name": f, "role": "database", "size": size, "sha256": sha, "compression": "none",
                               "format": "custom"} for f in doc["files"]]}
        path = kind_dir / name
        path.write_text(json.dumps(manifest))
        _age(path)
        written.append(str(path))
    return written


def test_crafted_manifests_are_reported_and_never_acted_on(db, tmp_path, canaries):
    """Case 1: absolute, ``../..`` and crafted-id manifests, in the backup directory and at a destination."""
    cluster, name = db
    backup_dir = tmp_path / "backups"
    second = tmp_path / "second-disk"
    env = cli.cli_env(cluster.url(name), backup_dir, BACKUP_LOCAL_PATH=str(second), BACKUP_LEFTOVER_GRACE="1s")
    good = cli.create(env, "full")
    cli.run(["sync"], env)
    planted = {}
    for root in (backup_dir, second):
        planted[root] = _crafted_manifests(root / "full", canaries)
    for repo in (Repository(str(backup_dir)), Repository(str(second))):
        invalid = dict(repo.invalid_manifests())
        assert sorted(invalid) == sorted(planted[Path(repo.root)]), invalid
    # every command, locally and at the destination: the crafted manifests are never acted on
    for where in ([], ["--destination", "local"]):
        listed = json.loads(cli.run(["list", "--json"] + where, env).stdout)
        assert [b["id"] for b in listed] == [good["id"]]
        cli.run(["verify", "--level", "checksum"] + where, env, check=False)
        cli.run(["cleanup"] + where, env)
        for selector in ("full-app-20200101T000000Z", "full-app-20200103T000000Z", "latest"):
            target = "%s_r%s" % (name, uuid.uuid4().hex[:4])
            target_url = cluster.url(target, with_password=False)
            proc = cli.run(["restore", selector, "--target-url", target_url] + where, env, check=False)
            if selector == "latest":
                assert proc.returncode == 0, proc.stderr
            else:
                assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for root, paths in planted.items():
        assert all(os.path.exists(p) for p in paths), "an untrusted manifest was acted on in %s" % root
        assert not os.listdir(root / ".scratch") if (root / ".scratch").exists() else True
    assert [b["id"] for b in cli.listing(env)] == [good["id"]]


def test_only_our_leftovers_go_after_the_grace_and_symlinked_folders_are_refused(db, tmp_path, canaries):
    """Case 2: orphan removal touches only our names, only after the grace period, never through a symlink."""
    cluster, name = db
    backup_dir = tmp_path / "backups"
    env = cli.cli_env(cluster.url(name), backup_dir)
    first = cli.create(env, "full")
    full = backup_dir / "full"
    ours_old = full / "full-app-20200101T000000Z.dump.gz"
    ours_partial = full / "full-app-20200101T000001Z.dump.gz.partial"
    ours_young = full / "full-app-20200101T000002Z.dump.gz"
    foreign = [full / "notes.txt", full / "full-app-20200101T000000Z.dump.txt", backup_dir / "data" / "keep.me",
               full / "schema-app-20200101T000000Z.dump"]
    for path in [ours_old, ours_partial, ours_young] + foreign:
        path.write_bytes(b"PGDMP")
        _age(path)
    _age(ours_young, time.time())
    link_target = tmp_path / "elsewhere"
    link_target.mkdir()
    (link_target / "full-app-20200101T000003Z.dump.gz").write_bytes(b"theirs")
    _age(link_target / "full-app-20200101T000003Z.dump.gz")
    (full / "full-app-20200101T000004Z.dump.gz").symlink_to(canaries[0])  # a planted link with our name
    second = cli.create(env, "full")
    assert not ours_old.exists() and not ours_partial.exists()  # ours, old: removed
    assert ours_young.exists()  # ours but younger than the grace period
    assert all(p.exists() for p in foreign)  # never ours, whatever their age
    assert os.path.islink(full / "full-app-20200101T000004Z.dump.gz")
    # a symlinked kind folder is refused, never followed: create and cleanup say so in one line
    shutil.rmtree(backup_dir / "schema")
    os.symlink(link_target, backup_dir / "schema")
    for args in (["create", "--type", "full"], ["cleanup"], ["list"]):
        line = _failed(args, dict(env, BACKUP_LEFTOVER_GRACE="0s"), ConfigError)
        assert line == ("seawall-pgbackup: error: %s is a symbolic link: refusing to follow it; use the directory "
                        "it points to" % (backup_dir / "schema")), line
    assert (link_target / "full-app-20200101T000003Z.dump.gz").read_bytes() == b"theirs"
    os.unlink(backup_dir / "schema")
    assert [b["id"] for b in cli.listing(env)] == [first["id"], second["id"]]


def test_an_existing_directory_mode_is_never_changed(db, tmp_path):
    """Case 2: create chmods nothing; an unsafe BACKUP_DIR (``/tmp``, group/world-writable) is refused."""
    cluster, name = db
    readable = tmp_path / "readable"
    readable.mkdir(mode=0o755)
    os.chmod(readable, 0o755)
    cli.create(cli.cli_env(cluster.url(name), readable), "full")
    assert stat.S_IMODE(os.stat(readable).st_mode) == 0o755
    fresh = tmp_path / "fresh" / "backups"
    cli.create(cli.cli_env(cluster.url(name), fresh), "full")
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(fresh / "full").st_mode) == 0o700
    tmp_mode = os.stat("/tmp").st_mode
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    (shared / "data").mkdir()
    (shared / "data" / "theirs.dump").write_bytes(b"x")
    for directory, why in (("/tmp", "writable by others"), (str(shared), "writable by others")):
        line = _failed(["create"], cli.cli_env(cluster.url(name), directory), ConfigError)
        assert line.startswith("seawall-pgbackup: error: %s is %s" % (directory, why)) and "chmod go-w" in line
    assert os.stat("/tmp").st_mode == tmp_mode and not os.path.exists("/tmp/full")
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o777 and os.listdir(shared / "data") == ["theirs.dump"]


def _other_user() -> pwd.struct_passwd:
    return pwd.getpwnam("nobody")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to another user")
def test_root_refuses_a_directory_another_user_controls(db, tmp_path, canaries):
    """Case 3 as root: a directory owned by another user, or a planted .lock / backup.log symlink."""
    cluster, name = db
    nobody = _other_user()
    hostile = tmp_path / "hostile"
    hostile.mkdir(mode=0o755)
    for sub in ("logs", "full"):
        (hostile / sub).mkdir()
    os.symlink(canaries[0], hostile / ".lock")
    os.symlink(canaries[1], hostile / "logs" / "backup.log")
    for path in (hostile, hostile / "logs", hostile / "full"):
        os.lchown(path, nobody.pw_uid, nobody.pw_gid)
    env = cli.cli_env(cluster.url(name), hostile)
    for args in (["create"], ["cleanup"], ["verify"]):
        line = _failed(args, env, ConfigError)
        assert "%s is owned by uid %d" % (hostile, nobody.pw_uid) in line, line
    health = cli.run(["health"], env, check=False)  # CRITICAL (Nagios 2), not a traceback or an unknown code
    assert health.returncode == 2 and "CRITICAL  repository" in health.stdout, health.stdout + health.stderr
    assert os.listdir(hostile / "full") == []
    # our own directory, with links planted at the lock and the log (an earlier owner, a restored tarball):
    own = tmp_path / "own"
    shutil.copytree(hostile, own, symlinks=True)
    for path in (own, own / "logs", own / "full"):
        os.lchown(path, 0, 0)
        os.chmod(path, 0o700)
    env = cli.cli_env(cluster.url(name), own)
    line = _failed(["create"], env, ConfigError)
    assert line.startswith("seawall-pgbackup: error: cannot use lock file %s" % (own / ".lock")), line
    assert os.path.islink(own / ".lock")
    os.unlink(own / ".lock")
    cli.create(env, "full")  # runs; the log is not written through the planted link
    assert os.path.islink(own / "logs" / "backup.log")
    hard = own / "logs" / "backup-failures.log"
    if hard.exists():
        hard.unlink()
    os.link(canaries[1], hard)  # a hard link at a log name is not appended to either
    cli.run(["create", "--type", "schema"], dict(env, DATABASE_URL=cluster.url("no_such_db_%s" % name)), check=False)
    os.unlink(hard)


ENGINE = Path(__file__).resolve().parents[2] / "plugins" / "module_utils" / "pgbackup"
SYSTEM_PYTHON = "/usr/bin/python3"  # the engine is stdlib only; the test venv may live where nobody cannot read


def _as_nobody(env: dict) -> list:
    return ["setpriv", "--reuid=nobody", "--regid=%d" % _other_user().pw_gid, "--clear-groups", "env", "-i"] + \
        ["%s=%s" % kv for kv in env.items()]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_an_unprivileged_user_on_its_own_repository(db, tmp_path):
    """Case 3 as an unprivileged user: its own repository works (0700), root's is refused in one line."""
    cluster, name = db
    nobody = _other_user()
    base = tempfile.mkdtemp(prefix="seawall-nobody-")  # /tmp: sticky, so a safe parent for another user
    os.chown(base, nobody.pw_uid, nobody.pw_gid)
    try:
        shim = Path(base) / "shim"
        shim.mkdir()
        (shim / "seawall_pgbackup").symlink_to(ENGINE)
        env = cli.cli_env(cluster.url(name), os.path.join(base, "backups"), HOME=base, TMPDIR=base,
                          PYTHONPATH=str(shim))
        env.pop("XDG_RUNTIME_DIR", None)
        env.pop("RUNTIME_DIRECTORY", None)
        command = [SYSTEM_PYTHON, "-m", "seawall_pgbackup.cli.run"]
        usable = subprocess.run(_as_nobody(env) + command + ["--version"], capture_output=True, check=False)
        if usable.returncode != 0:
            pytest.skip("nobody cannot run the engine here: %s" % usable.stderr.decode()[-200:])
        cmd = _as_nobody(env) + command
        made = subprocess.run(cmd + ["create", "--json"], capture_output=True, text=True, check=False, timeout=300)
        assert made.returncode == 0, made.stderr
        backups = Path(base) / "backups"
        assert os.stat(backups).st_uid == nobody.pw_uid and stat.S_IMODE(os.stat(backups).st_mode) == 0o700
        listed = subprocess.run(cmd + ["list", "--json"], capture_output=True, text=True, check=True, timeout=120)
        assert [b["id"] for b in json.loads(listed.stdout)] == [json.loads(made.stdout)["id"]]
        assert subprocess.run(cmd + ["cleanup"], capture_output=True, text=True, timeout=120,
                              check=False).returncode == 0
        # a directory root owns is never written by nobody: one line, nothing created
        rooted = Path(base) / "rooted"
        rooted.mkdir(mode=0o755)
        env["BACKUP_DIR"] = str(rooted)
        refused = subprocess.run(_as_nobody(env) + command + ["create"], capture_output=True, text=True,
                                 timeout=120, check=False)
        assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert os.listdir(rooted) == []
        # a passfile never lands in the shared /tmp: nobody's went to its private runtime directory
        assert not [n for n in os.listdir(base) if n.startswith(("pgpass", "seawall-pgpass"))]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_stale_scratch_of_killed_restores_is_removed_only_when_ours(tmp_path, canaries):
    """Case 10: ``.restore-*`` and ``.scratch/*`` of killed runs go after the grace; live, foreign and linked stay."""
    repo = Repository(str(tmp_path / "backups"))
    repo.prepare()
    root = Path(repo.root)
    sleeper = subprocess.Popen(["sleep", "60"])  # pylint: disable=consider-using-with
    try:
        dead = root / ".restore-999999999-abcd1234"
        legacy = root / ".restore-k2j3h4"
        live = root / (".restore-%d-abcd" % sleeper.pid)
        young = root / ".restore-999999998-young"
        fetched = root / ".scratch" / "local-999999999-20200101T000000123456"
        for path in (dead, legacy, live, young, fetched):
            path.mkdir(parents=True)
            (path / "archive.dump").write_bytes(b"PGDMP")
            _age(path)
        _age(root / ".scratch", time.time())
        _age(young, time.time())
        os.symlink(tmp_path, root / ".restore-999999997-link")
        (root / ".restore-notes").write_bytes(b"a user's file")
        env = cli.cli_env(None, root)
        result = json.loads(cli.run(["cleanup", "--json"], env).stdout)
        assert result["deleted"] == []
        assert not dead.exists() and not legacy.exists() and not fetched.exists()
        assert live.exists() and young.exists() and (root / ".restore-notes").exists()
        assert os.path.islink(root / ".restore-999999997-link") and (tmp_path / "canary").exists()
        log = (root / "logs" / "backup.log").read_text()
        assert "removed-scratch path=%s" % dead in log
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_copied_manifest_never_makes_cleanup_delete_listed_files(db, tmp_path):
    """Case 10: a copy of a manifest (under another name) is reported and never acted on."""
    cluster, name = db
    backup_dir = tmp_path / "backups"
    config = tmp_path / "seawall.json"
    config.write_text(json.dumps({"backup": {"types": {"full": {"retention": {"keep_last": 1}}}}}))
    env = cli.cli_env(cluster.url(name), backup_dir, BACKUP_CONFIG=str(config), BACKUP_LEFTOVER_GRACE="0s")
    older = cli.create(env, "full")
    time.sleep(1.1)
    newer = cli.create(env, "full")
    full = backup_dir / "full"
    for source in (older, newer):
        copy = full / ("%s-copy.json" % source["id"])
        shutil.copy(full / (source["id"] + ".json"), copy)
        _age(copy)
    other_kind = backup_dir / "schema" / (older["id"] + ".json")  # the same name in another kind's folder
    shutil.copy(full / (older["id"] + ".json"), other_kind)
    _age(other_kind)
    renamed = full / "full-other-20200101T000000Z.json"
    document = json.loads((full / (newer["id"] + ".json")).read_text())
    document["id"] = "full-other-20200101T000000Z"
    renamed.write_text(json.dumps(document))
    _age(renamed)
    newer_files = [full / f["name"] for f in document["files"]]
    result = json.loads(cli.run(["cleanup", "--json"], env).stdout)
    assert result["deleted"] == [older["id"]]
    assert all(p.exists() for p in newer_files)
    verified = cli.run(["verify", "--level", "checksum", newer["id"]], env, check=False)
    assert verified.returncode == 0, verified.stderr
    assert renamed.exists() and (full / ("%s-copy.json" % newer["id"])).exists()
    assert other_kind.exists() and str(other_kind) in dict(Repository(str(backup_dir)).invalid_manifests())
    assert [b["id"] for b in cli.listing(env)] == [newer["id"]]


def test_sigkill_leaves_no_password_file_in_tmp(tmp_path):
    """Case 10: the passfile is in a private runtime directory, and the next run removes a killed run's."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts and never answers: psql waits, holding its passfile
    port = silent.getsockname()[1]
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    url = "postgresql://app:s3cr%%23t%%2Fpw@127.0.0.1:%d/app" % port
    env = cli.cli_env(url, tmp_path / "backups", RUNTIME_DIRECTORY=str(runtime), PGCONNECT_TIMEOUT="60")
    before_tmp = set(os.listdir(tempfile.gettempdir()))
    proc = subprocess.Popen(cli.COMMAND + ["create"], env=env, stdin=subprocess.DEVNULL,  # pylint: disable=R1732
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 60
        while not os.listdir(runtime) and time.time() < deadline:
            time.sleep(0.1)
        left = os.listdir(runtime)
        assert left and left[0].startswith("pgpass-%d-" % proc.pid), left
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    assert os.path.exists(runtime / left[0])  # SIGKILL: no chance to clean up ...
    assert stat.S_IMODE(os.stat(runtime / left[0]).st_mode) == 0o600
    new_in_tmp = set(os.listdir(tempfile.gettempdir())) - before_tmp  # other runs may write there meanwhile
    holding = []
    for entry in new_in_tmp:
        path = os.path.join(tempfile.gettempdir(), entry)
        try:
            if os.path.isfile(path) and not os.path.islink(path) and os.path.getsize(path) < 4096:
                with open(path, "rb") as handle:
                    if b"s3cr#t/pw" in handle.read():
                        holding.append(path)
        except OSError:
            continue
    assert not holding, holding  # ... and nothing of it in /tmp
    silent.close()
    proc = cli.run(["create"], env, check=False)  # the next run (refused connection) removes it
    assert proc.returncode != 0 and "s3cr" not in proc.stderr
    assert os.listdir(runtime) == []
    # without systemd's RUNTIME_DIRECTORY: a private per-user directory, never a bare /tmp file
    assert stat.S_IMODE(os.stat(runtime_dir({})).st_mode) == 0o700
