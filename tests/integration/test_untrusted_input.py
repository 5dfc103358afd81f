"""The repository and the environment are untrusted input (issue #11, cases 7, 8 and 10).

A manifest of the wrong shape, an unreadable or read-only repository, a password with any character
in DATABASE_URL, a crowd of idle connections to ``serve``: every command still ends with its report or
one error line and its kind's exit code, never a traceback, and nothing good is lost or leaked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from urllib.parse import quote

import pytest

from seawall_pgbackup.core.errors import BackupError, ConfigError, InternalError
from tests.integration import cli
from tests.support.pgcluster import free_port, quote_literal

CANARY = b"not the backup tool's file\n"


def sha(path) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def no_traceback(proc: subprocess.CompletedProcess, allowed=(0,)) -> None:
    """Exited with an allowed code, and a failure is one line (a traceback is a bug)."""
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    assert proc.returncode != InternalError.exit_code, proc.stderr  # user data is never a bug
    assert proc.returncode in allowed, (proc.returncode, proc.stdout, proc.stderr)
    if proc.returncode not in (0, 1, 2):  # health's Nagios codes print a report, not an error
        cli.error_line(proc)


@pytest.fixture(name="repo")
def _repo(pg15, tmp_path):
    from tests.support import load_sample

    name = "untrusted_%d" % os.getpid()
    load_sample(pg15, name)
    backup_dir = tmp_path / "backups"
    env = cli.cli_env(pg15.url(name), backup_dir, BACKUP_FULL_SCHEDULE="0 2 * * *")
    first = cli.create(env, "full")
    files = {f["name"]: sha(backup_dir / "full" / f["name"]) for f in first["files"]}
    yield {"env": env, "dir": backup_dir, "first": first, "files": files, "cluster": pg15, "db": name,
           "tmp": tmp_path}
    pg15.drop_db(name)


def _intact(repo) -> None:
    """The first backup is listed and every one of its files has its sha256."""
    assert repo["first"]["id"] in [b["id"] for b in cli.listing(repo["env"])]
    for name, digest in repo["files"].items():
        assert sha(repo["dir"] / "full" / name) == digest


def _planted(repo):
    """Manifests of the wrong shape next to the good one: {file name: what is wrong}."""
    full = repo["dir"] / "full"
    good = json.loads((full / (repo["first"]["id"] + ".json")).read_text(encoding="utf-8"))
    slug = repo["first"]["id"].split("-", 1)[1].rsplit("-", 1)[0]

    def copy_as(stamp, **changes):
        backup_id = "full-%s-%s" % (slug, stamp)
        doc = json.loads(json.dumps(good))
        doc["id"] = backup_id
        doc["files"] = [dict(f, name=f["name"].replace(repo["first"]["id"], backup_id)) for f in doc["files"]]
        for entry in doc["files"]:  # its data files exist, so only the manifest is wrong
            shutil.copy(full / entry["name"].replace(backup_id, repo["first"]["id"]), full / entry["name"])
        doc.update(changes)
        return backup_id + ".json", doc

    planted = {}
    name, doc = copy_as("20200101T000000Z", created_at=12345)
    (full / name).write_text(json.dumps(doc), encoding="utf-8")
    planted[name] = "created_at"
    name, doc = copy_as("20200102T000000Z", id=None)
    (full / name).write_text(json.dumps(doc), encoding="utf-8")
    planted[name] = "id"
    name, doc = copy_as("20200103T000000Z")
    doc["files"] = [{k: v for k, v in f.items() if k != "name"} for f in doc["files"]]
    (full / name).write_text(json.dumps(doc), encoding="utf-8")
    planted[name] = "name"
    name = "full-%s-20200104T000000Z.json" % slug
    (full / name).write_bytes(b'{"id": "\xff\xfe\x80", "created_at": "\xc3\x28"}')
    planted[name] = "utf"
    name = "full-%s-20200105T000000Z.json" % slug
    with open(full / name, "wb") as handle:  # 1 GB, sparse: the reader must stop at its size limit
        handle.truncate(1024 ** 3)
    planted[name] = "larger"
    outside = repo["tmp"] / "canary.json"
    outside.write_bytes(CANARY)
    name = "full-%s-20200106T000000Z.json" % slug
    os.symlink(outside, full / name)
    planted[name] = "symlink"  # not a file of ours: never followed, never counted (it is no manifest)
    (full / ("full-%s-20200107T000000Z.json" % slug)).mkdir()  # a directory is not a manifest
    return planted, outside


def _named(planted):
    """The planted manifests a listing names as not trusted: every one but the symlink, which it never opens."""
    return {name: why for name, why in planted.items() if why != "symlink"}


def test_manifests_of_the_wrong_shape_stop_nothing(repo):
    """Case 7: every command runs past them, names them, never acts on them, and backups go on."""
    planted, canary = _planted(repo)
    full = repo["dir"] / "full"
    # every file but the good manifest (verify records its result there) and the sparse 1 GB one
    before = {p.name: sha(p) for p in full.iterdir() if p.is_file() and not p.is_symlink()
              and p.stat().st_size < 1024 ** 2 and p.name != repo["first"]["id"] + ".json"}
    env = repo["env"]

    listed = cli.run(["list"], env, check=False)
    no_traceback(listed)
    assert repo["first"]["id"] in listed.stdout
    skipped = [ln for ln in listed.stderr.splitlines() if "skipped" in ln]
    assert len(skipped) == 1 and "%d manifests" % len(_named(planted)) in skipped[0], listed.stderr
    as_json = cli.run(["list", "--json"], env, check=False)
    no_traceback(as_json)
    assert [b["id"] for b in json.loads(as_json.stdout)] == [repo["first"]["id"]]
    assert "%d manifests" % len(_named(planted)) in as_json.stderr

    health = cli.run(["health", "--json"], env, check=False)
    no_traceback(health, allowed=(2,))
    report = json.loads(health.stdout)
    catalog = [c for c in report["checks"] if c["check"] == "catalog"]
    assert report["status"] == "critical" and catalog and catalog[0]["status"] == "critical", report
    for name in _named(planted):
        assert name in catalog[0]["reason"], (name, catalog[0]["reason"])
    text = cli.run(["health"], env, check=False)
    no_traceback(text, allowed=(2,))
    assert re.search(r"^  CRITICAL +catalog +%d manifests not trusted" % len(_named(planted)), text.stdout, re.M), text.stdout

    for args in (["verify"], ["verify", repo["first"]["id"]], ["cleanup", "--dry-run"], ["cleanup"],
                 ["sync", "--dry-run"]):
        proc = cli.run(args, env, check=False)
        no_traceback(proc)
    for name in planted:  # never acted on: what fails to parse is reported, not deleted
        assert os.path.lexists(full / name), name
    for name, digest in before.items():
        assert sha(full / name) == digest, name
    assert canary.read_bytes() == CANARY

    created = cli.run(["create", "--type", "full", "--json"], env, check=False)
    no_traceback(created)
    new_id = json.loads(created.stdout)["id"]
    assert [b["id"] for b in cli.listing(env)] == [repo["first"]["id"], new_id]
    _intact(repo)
    with open(repo["dir"] / "logs" / "last-run-create-full.json", encoding="utf-8") as handle:
        assert json.load(handle)["status"] == "ok"


def test_manifests_of_the_wrong_shape_at_a_destination(repo):
    """Case 7 at a destination (a second directory): listed as skipped, never acted on, nothing stops."""
    second = repo["tmp"] / "second-disk"
    env = dict(repo["env"], BACKUP_LOCAL_PATH=str(second))
    cli.run(["sync"], env)
    planted, _canary = _planted(repo)
    for name in planted:  # the same wrong manifests, at the destination too
        source = repo["dir"] / "full" / name
        if source.is_symlink():
            os.symlink(os.readlink(source), second / "full" / name)
        elif source.stat().st_size > 1024 ** 2:
            with open(second / "full" / name, "wb") as handle:
                handle.truncate(source.stat().st_size)
        else:
            shutil.copy(source, second / "full" / name)
    before = sorted(os.listdir(second / "full"))
    listed = cli.run(["list", "--destination", "local", "--json"], env, check=False)
    no_traceback(listed)
    assert [b["id"] for b in json.loads(listed.stdout)] == [repo["first"]["id"]]
    assert "%d manifests" % len(_named(planted)) in listed.stderr, listed.stderr
    for args in (["verify", "--destination", "local"], ["cleanup", "--destination", "local"], ["sync"],
                 ["cleanup", "--destination", "local", "--dry-run"]):
        no_traceback(cli.run(args, env, check=False))
    assert sorted(os.listdir(second / "full")) == before  # nothing planted was deleted, nothing good lost


@pytest.mark.parametrize("content", [b"\xff\xfe not json", b'{"job": 12, "status": ["ok"], "started_at": 5}', b"[]",
                                     b'{"ok": "yes", "finished_at": "yesterday"}'])
def test_records_of_the_wrong_shape_stop_nothing(repo, content):
    """A run record or drill report of the wrong shape: health and the next runs report it, never crash."""
    logs = repo["dir"] / "logs"
    for name in ("last-run-create-full.json", "last-run-cleanup.json", "drill-latest.json"):
        (logs / name).write_bytes(content)
    for args in (["health"], ["health", "--json"], ["list"], ["cleanup", "--dry-run"]):
        no_traceback(cli.run(args, repo["env"], check=False), allowed=(0, 1, 2))
    no_traceback(cli.run(["create", "--type", "full"], repo["env"], check=False))
    health = cli.run(["health", "--json"], repo["env"], check=False)
    no_traceback(health, allowed=(0, 1, 2))
    _intact(repo)


def test_restore_past_a_bad_manifest(repo, pg15):
    """restore latest picks the good backup, not a bad manifest (case 7)."""
    _planted(repo)
    target = "untrusted_restored_%d" % os.getpid()
    proc = cli.run(["restore", "latest", "--target-url", pg15.url(target)], repo["env"], check=False)
    try:
        no_traceback(proc)
        assert repo["first"]["id"] in proc.stdout
    finally:
        pg15.drop_db(target)


def _read_only_commands(env, backup_id):
    for args in (["verify"], ["verify", backup_id], ["cleanup"], ["cleanup", "--dry-run"], ["list"]):
        proc = cli.run(args, env, check=False)
        no_traceback(proc, allowed=(0, BackupError.exit_code))
        if proc.returncode:
            assert "not writable" in proc.stderr or "read-only file system" in proc.stderr.lower() \
                or "permission denied" in proc.stderr.lower(), proc.stderr
    health = cli.run(["health", "--json"], env, check=False)
    assert "Traceback" not in health.stderr and health.returncode == 2, (health.stdout, health.stderr)
    report = json.loads(health.stdout)
    assert report["status"] == "critical"
    writable = [c for c in report["checks"] if c["check"] == "repository"]
    assert writable and writable[0]["status"] == "critical" and "not writable" in writable[0]["reason"], report


def test_read_only_repository(repo, tmpfs):
    """Case 10: on a read-only repository verify/cleanup end in one line or succeed, health is not OK."""
    target = tmpfs(repo["tmp"] / "ro", "size=64m")
    shutil.copytree(repo["dir"], target / "backups", symlinks=True)
    subprocess.run(["mount", "-o", "remount,ro", str(target)], check=True)
    env = dict(repo["env"], BACKUP_DIR=str(target / "backups"))
    _read_only_commands(env, repo["first"]["id"])
    _intact(repo)


def test_read_only_by_mode(repo):
    """Case 10 as a user without root: a backup directory of mode 0500 is read-only to its owner."""
    if os.geteuid() == 0:
        pytest.skip("root writes through any mode; test_read_only_repository covers root with a read-only mount")
    target = repo["tmp"] / "ro-mode"
    shutil.copytree(repo["dir"], target, symlinks=True)
    for directory, _dirs, _files in os.walk(target):
        os.chmod(directory, 0o500)
    try:
        _read_only_commands(dict(repo["env"], BACKUP_DIR=str(target)), repo["first"]["id"])
    finally:
        for directory, _dirs, _files in os.walk(target):
            os.chmod(directory, 0o700)


def test_unreadable_repository_is_critical(repo, tmpfs):
    """health is CRITICAL for a backup directory it cannot read (here: a file where the directory should be)."""
    target = repo["tmp"] / "not-a-dir"
    target.write_text("x", encoding="utf-8")
    env = dict(repo["env"], BACKUP_DIR=str(target))
    health = cli.run(["health", "--json"], env, check=False)
    assert "Traceback" not in health.stderr
    if health.returncode == 2:
        report = json.loads(health.stdout)
        assert any(c["check"] == "repository" and c["status"] == "critical" for c in report["checks"]), report
    else:
        assert health.returncode > 2 and cli.error_line(health)
    for args in (["list"], ["verify"], ["cleanup"]):  # refused in one line: the directory is no directory
        no_traceback(cli.run(args, env, check=False), allowed=(ConfigError.exit_code,))


ENCODED_PASSWORD = "p#s?s/w@r%d: x"  # written percent-encoded, as users do
RAW_PASSWORD = "p#s?s@w%d: x"  # written as it is: libpq takes raw # ? : and spaces


def _cmdlines():
    """argv of every process we can see, by pid."""
    found = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as handle:
                    found[int(pid)] = handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError:
                pass
    return found


def _leaks(password, root):
    """Files under ``root`` holding the password, raw or percent-encoded."""
    needles = [password.encode(), quote(password, safe="").encode(), quote(password).encode()]
    found = []
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as handle:
                data = handle.read()
            if any(n in data for n in needles):
                found.append(path)
    return found


@pytest.mark.parametrize("password,written", [(ENCODED_PASSWORD, "encoded"), (RAW_PASSWORD, "raw")])
def test_a_password_with_any_character_is_parsed_and_appears_nowhere(repo, pg15, password, written):
    """Case 8: not in argv of psql/pg_dump while they run, not in a file we write, not in output or errors."""
    role = "pw_%s_%d" % (written, os.getpid())
    pg15.psql("CREATE ROLE %s LOGIN SUPERUSER PASSWORD %s" % (role, quote_literal(password)))
    # more than the 1 MiB pipe holds, so pg_dump is still running while the reader is paused
    pg15.psql("CREATE TABLE IF NOT EXISTS filler AS SELECT g, repeat(md5(g::text), 8) AS t "
              "FROM generate_series(1, 40000) g", db=repo["db"])
    secret = quote(password, safe="") if written == "encoded" else password
    url = "postgresql://%s:%s@127.0.0.1:%d/%s" % (role, secret, pg15.port, repo["db"])
    marker = repo["tmp"] / ("paused-" + written)
    env = dict(repo["env"], DATABASE_URL=url, SEAWALL_TEST_PAUSE="dump-streaming", SEAWALL_TEST_PAUSE_FILE=str(marker),
               SEAWALL_TEST_PAUSE_SECONDS="2")
    try:
        proc = subprocess.Popen(cli.COMMAND + ["create", "--type", "full", "--json"], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        running = _cmdlines()  # pg_dump is blocked writing into the paused pipe: it is running now
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        dumps = [c for c in running.values() if "pg_dump " in c and role in c]
        assert dumps, [c for c in running.values() if "pg_dump" in c or "seawall_pg" in c]
        for needle in (password, quote(password, safe=""), secret):
            assert not [c for c in running.values() if needle in c]
            assert needle not in out and needle not in err
        backup = json.loads(out)
        assert backup["source"]["url"] == "postgresql://%s@127.0.0.1:%d/%s" % (role, pg15.port, repo["db"])
        assert backup["source"]["user"] == role

        # errors name the server, never the secret: an unknown database, an unreachable port, a wrong login
        for bad_url in (url.replace(repo["db"], "no_such_db"),
                        url.replace(":%d/" % pg15.port, ":%d/" % free_port()),
                        url.replace(role + ":", "nobody_%d:" % os.getpid())):
            failed = cli.run(["create"], dict(env, DATABASE_URL=bad_url, SEAWALL_TEST_PAUSE=""), check=False)
            line = cli.error_line(failed)
            for needle in (password, quote(password, safe=""), secret):
                assert needle not in line and needle not in failed.stdout, line
        for args in (["list", "--json"], ["health", "--json"], ["verify"], ["cleanup", "--dry-run", "--json"]):
            shown = cli.run(args, dict(env, SEAWALL_TEST_PAUSE=""), check=False)
            assert "Traceback" not in shown.stderr
            for needle in (password, quote(password, safe=""), secret):
                assert needle not in shown.stdout and needle not in shown.stderr, args
        assert _leaks(password, repo["dir"]) == []  # manifests, logs/backup.log, run records, failures log
    finally:
        pg15.psql("DROP ROLE IF EXISTS %s" % role)


def test_serve_outlasts_idle_connections(tmp_path):
    """Case 10: 200 idle clients neither pin 200 threads nor keep /metrics from answering; they time out."""
    from seawall_pgbackup.cli.serve import IDLE_TIMEOUT

    port = free_port()
    env = cli.cli_env(None, tmp_path / "backups")
    server = subprocess.Popen(cli.COMMAND + ["serve", "--listen", "127.0.0.1:%d" % port], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    idle = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _conn in range(200)]
        idle[0].sendall(b"GET /metr")  # a slow client: half a request line, then nothing
        time.sleep(0.5)
        started = time.monotonic()
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as response:
            assert response.status == 200 and b"seawall_" in response.read()
        assert time.monotonic() - started < 5
        threads = len(os.listdir("/proc/%d/task" % server.pid))
        assert threads < 20, threads  # bounded: not one per connection
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=10)  # pylint: disable=R1732
            raise AssertionError("an empty backup directory is healthy")
        except urllib.error.HTTPError as critical:  # 503: no backup yet, the answer still comes
            assert critical.code == 503 and json.loads(critical.read())["status"] == "critical"
        # every idle client is closed by the server after the timeout
        waited = time.monotonic()
        for sock in idle:
            sock.settimeout(IDLE_TIMEOUT + 10)
            assert sock.recv(1) == b""
        assert time.monotonic() - waited < IDLE_TIMEOUT + 5
        assert server.poll() is None
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as response:
            assert response.status == 200
    finally:
        for sock in idle:
            sock.close()
        server.terminate()
        _out, err = server.communicate(timeout=30)
    assert b"Traceback" not in err, err
