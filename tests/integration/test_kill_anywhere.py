"""kill -9 anywhere (issue #11): create, cleanup, rekey and ``restore --clean`` killed with SIGKILL at named
points (core/testpoints.pause, ``SEAWALL_TEST_PAUSE``) and while a client tool runs.

After every kill: no good backup is lost (each previously good backup that the run was not asked to remove
is still listed and every one of its files has the recorded size and sha256), no file outside the
repository changed (a canary directory next to it), the target database of ``restore --clean`` exists,
and the next run succeeds and leaves no leftover behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
import uuid

import pytest

from tests.integration import cli
from tests.support import load_sample


@pytest.fixture(scope="module", name="source")
def _source(pg15):
    name = "kill_%s" % uuid.uuid4().hex[:8]
    load_sample(pg15, name)
    yield name
    pg15.drop_db(name)


def _sha(path) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


class World:
    """A backup directory, a canary directory beside it, and the environment of the command."""

    def __init__(self, pg15, source, tmp_path, **extra):
        self.tmp = tmp_path
        self.dir = tmp_path / "backups"
        self.canary = tmp_path / "canary"
        self.canary.mkdir()
        (self.canary / "precious.txt").write_text("not the backup tool's\n", encoding="utf-8")
        os.symlink(self.canary / "precious.txt", self.canary / "link")
        self.work = tmp_path / "work"  # pause markers
        self.work.mkdir()
        self.env = cli.cli_env(pg15.url(source), self.dir, BACKUP_FULL_SCHEDULE="0 2 * * *", **extra)
        self.outside = self._outside()

    def _outside(self):
        found = {}
        for directory, _dirs, files in os.walk(self.canary):
            for name in files:
                path = os.path.join(directory, name)
                found[path] = (os.lstat(path).st_mode, _sha(path) if not os.path.islink(path) else os.readlink(path))
        return found

    def listed(self):
        return {b["id"]: b for b in cli.listing(self.env)}

    def files_of(self, backup):
        """{name: (size, sha256)} as its manifest records them."""
        with open(self.dir / backup["type"] / (backup["id"] + ".json"), encoding="utf-8") as handle:
            manifest = json.load(handle)
        return {f["name"]: (f["size"], f["sha256"]) for f in manifest["files"]}

    def good(self):
        """{id: {file name: (size, sha256)}} of every listed backup, checked against the files on disk."""
        found = {}
        for backup_id, backup in self.listed().items():
            found[backup_id] = self.files_of(backup)
            for name, (size, digest) in found[backup_id].items():
                path = self.dir / backup["type"] / name
                assert path.is_file() and not path.is_symlink(), "%s of %s is missing" % (name, backup_id)
                assert (path.stat().st_size, _sha(path)) == (size, digest), "%s of %s changed" % (name, backup_id)
        return found

    def assert_outside_untouched(self):
        assert self._outside() == self.outside
        assert sorted(os.listdir(self.tmp)) == ["backups", "canary", "work"]

    def assert_no_leftovers(self):
        """Every file in a kind's folder is named by a listed manifest; no scratch is left."""
        named = set()
        for backup in self.listed().values():
            named.add("%s/%s.json" % (backup["type"], backup["id"]))
            named.update("%s/%s" % (backup["type"], name) for name in self.files_of(backup))
        found = set()
        for kind in ("full", "schema", "data", "globals", "incremental"):
            folder = self.dir / kind
            if folder.is_dir():
                found.update("%s/%s" % (kind, name) for name in os.listdir(folder))
        assert found == named
        scratch = self.dir / ".scratch"
        assert not scratch.exists() or not any(scratch.iterdir())

    def kill_at(self, args, step, timeout=180) -> None:
        """Run the command, SIGKILL it at pause point ``step`` (asserting the point was reached)."""
        marker = self.work / ("paused-%s-%s" % (step, uuid.uuid4().hex[:6]))
        env = dict(self.env, SEAWALL_TEST_PAUSE=step, SEAWALL_TEST_PAUSE_FILE=str(marker),
                   SEAWALL_TEST_PAUSE_SECONDS="120")
        proc = subprocess.Popen(cli.COMMAND + list(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        reached = marker.exists()
        _kill(proc)
        out, err = proc.communicate()
        assert reached, "pause point %s not reached by %s (exit %s): %s%s" % (
            step, args, proc.returncode, out.decode(), err.decode())
        marker.unlink()

    def kill_when(self, args, seen, timeout=180, allow_end=False) -> None:
        """Run the command, SIGKILL it as soon as ``seen()`` is true (while it runs; ``allow_end``: or not at all)."""
        proc = subprocess.Popen(cli.COMMAND + list(args), env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline and not seen(proc):
            time.sleep(0.01)
        running = proc.poll() is None
        _kill(proc)
        out, err = proc.communicate()
        assert running or allow_end, "%s ended before the kill point (exit %s): %s%s" % (
            args, proc.returncode, out.decode(), err.decode())


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the command, then anything it started (a client tool would die of a broken pipe anyway)."""
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _child_running(proc: subprocess.Popen, program: str) -> bool:
    """Whether a process of the command's session runs ``program``."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid, encoding="utf-8") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                argv = handle.read().split(b"\0")
        except (OSError, IndexError):
            continue
        if int(fields[3]) == proc.pid and argv and os.path.basename(argv[0]).decode() == program:
            return True  # fields[3]: the session id (the command leads its own session)
    return False


CREATE_STEPS = ["dump-streaming", "globals-streaming", "create-manifest", "create-saved"]


@pytest.mark.parametrize("step", CREATE_STEPS)
def test_kill_create(pg15, source, tmp_path, step):
    world = World(pg15, source, tmp_path)
    first = cli.create(world.env, "full")
    before = world.good()
    world.kill_at(["create", "--type", "full"], step)
    after = world.good()
    assert after[first["id"]] == before[first["id"]]  # the good backup is untouched
    assert len(after) == (2 if step == "create-saved" else 1)  # a new backup is listed only once complete
    world.assert_outside_untouched()
    again = cli.create(world.env, "full")  # the lock of the killed run is free, its files are no obstacle
    cli.run(["cleanup", "--leftover-grace", "0s"], world.env)  # the killed run's files go (create waits 6 h)
    cli.run(["verify", "--level", "checksum"], world.env)  # every backup whole, no file without its manifest
    assert again["id"] in world.good()  # (the first may go: retention keeps one full a day)
    world.assert_no_leftovers()
    world.assert_outside_untouched()


@pytest.mark.parametrize("delay", [0.05, 0.3, 0.6, 1.0, 1.5])
def test_kill_create_anytime(pg15, source, tmp_path, delay):
    """Between the named points too: SIGKILL after a delay (start-up, lock, snapshot, dump, manifest...)."""
    world = World(pg15, source, tmp_path)
    first = cli.create(world.env, "full")
    before = world.good()
    start = time.monotonic()
    world.kill_when(["create", "--type", "full"], lambda _p: time.monotonic() - start >= delay, allow_end=True)
    after = world.good()  # whatever is listed is whole
    assert after[first["id"]] == before[first["id"]] and len(after) <= 2
    world.assert_outside_untouched()
    cli.create(world.env, "full")
    cli.run(["cleanup", "--leftover-grace", "0s"], world.env)
    world.good()
    world.assert_no_leftovers()
    world.assert_outside_untouched()


CLEANUP_STEPS = ["cleanup-unlisted", "cleanup-deleted"]
KEEP_NEWEST = {"BACKUP_RETENTION_DAILY": "1", "BACKUP_RETENTION_WEEKLY": "0", "BACKUP_RETENTION_MONTHLY": "0"}


@pytest.mark.parametrize("step", CLEANUP_STEPS)
def test_kill_cleanup(pg15, source, tmp_path, step):
    world = World(pg15, source, tmp_path, **KEEP_NEWEST)
    taken = [cli.create(world.env, "full")["id"] for _round in range(3)]
    before = world.good()
    world.kill_at(["cleanup"], step)
    after = world.good()
    assert after[taken[-1]] == before[taken[-1]]  # the one retention keeps
    for backup_id, files in after.items():  # whatever is still listed is whole
        assert files == before[backup_id]
    world.assert_outside_untouched()
    cli.run(["cleanup", "--leftover-grace", "0s"], world.env)
    assert list(world.good()) == [taken[-1]]
    world.assert_no_leftovers()
    world.assert_outside_untouched()


REKEY_STEPS = ["rekey-copied", "rekey-saved"]


@pytest.mark.parametrize("step", REKEY_STEPS)
def test_kill_rekey(pg15, source, tmp_path, step):
    world = World(pg15, source, tmp_path)
    keyring = tmp_path / "work" / "keys"
    world.env.update(BACKUP_ENCRYPTION="true", BACKUP_ENCRYPTION_KEYRING=str(keyring))
    cli.run(["keygen", "--keyring", str(keyring)], world.env)
    backup = cli.create(world.env, "full")
    cli.run(["keygen", "--keyring", str(keyring)], world.env)
    world.kill_at(["rekey", "--all"], step)
    assert list(world.good()) == [backup["id"]]  # listed, and the files its manifest names are whole
    cli.run(["verify", backup["id"], "--level", "archive"], world.env)  # and they decrypt
    world.assert_outside_untouched()
    cli.run(["rekey", "--all"], world.env)
    cli.run(["cleanup", "--leftover-grace", "0s"], world.env)
    assert list(world.good()) == [backup["id"]]
    cli.run(["verify", backup["id"], "--level", "archive"], world.env)
    world.assert_no_leftovers()
    world.assert_outside_untouched()


def _restore_kill(world, pg15, target, kill) -> None:
    """Kill ``restore --clean`` into an existing database, then check it is there and the next run works."""
    args = ["restore", "latest", "--clean", "--target-url", pg15.url(target)]
    databases = set(pg15.databases())
    kill(world, args)
    assert target in pg15.databases(), "restore --clean killed: the target database is gone"
    world.assert_outside_untouched()
    cli.run(args, world.env)
    assert int(pg15.scalar("SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', "
                           "'information_schema')", db=target)) > 0
    assert set(pg15.databases()) == databases, "a database of the killed restore was left behind"
    world.assert_outside_untouched()


RESTORE_KILLS = {
    "pg_restore-running": lambda world, args: world.kill_when(args, lambda p: _child_running(p, "pg_restore")),
    "restore-before-swap": lambda world, args: world.kill_at(args, "restore-before-swap"),
    "restore-swapped": lambda world, args: world.kill_at(args, "restore-swapped"),
}


@pytest.mark.parametrize("point", sorted(RESTORE_KILLS))
def test_kill_restore_clean(pg15, source, tmp_path, point):
    world = World(pg15, source, tmp_path)
    cli.create(world.env, "full")
    target = "kill_target_%s" % uuid.uuid4().hex[:8]
    cli.run(["restore", "latest", "--target-url", pg15.url(target)], world.env)
    try:
        _restore_kill(world, pg15, target, RESTORE_KILLS[point])
    finally:
        for name in pg15.databases():
            if name.startswith(target):
                pg15.drop_db(name)
