"""The container image (Containerfile): built with podman FROM the systemd tests' local base image, run with
--network=host against a PostgreSQL 15 on this host.

* the one-shot form (`create --type full` as the command): client tools, the non-root user, the volume's
  ownership and the password as a podman secret file (never in argv or the container's environment);
* the entry point (`schedule`) with a per-minute full schedule: a full backup lands in the volume within ~90 s,
  /metrics and /livez answer, the image's HEALTHCHECK passes; `podman stop` (SIGTERM) during the second run
  (its pg_dump waits for a table lock the test holds) exits 0 and `seawall-pgbackup list --all` run on the
  host lists the first backup only.

Run as root (rootful podman, like tests/systemd); `make container` builds the base image first. Missing podman,
root or the base image skip the tests locally and fail them in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from tests.support.pgcluster import PgCluster, free_port, quote_literal

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = os.environ.get("SEAWALL_SYSTEMD_IMAGE", "localhost/seawall-systemd:bookworm")
IMAGE = "localhost/seawall-pgbackup:test"
HOST_PYTHON = "/usr/bin/python3"  # the venv's interpreter may live where the volume's owner cannot read
PODMAN_ENV = dict(os.environ, CONTAINERS_CONF=str(REPO / "tests" / "systemd" / "containers.conf"))
UID = 10001
PASSWORD = "c0ntainer:s3cret\\pw"  # a colon and a backslash: the passfile escapes them
ROLE = "container_backup"
DATABASE = "container_shop"


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail("container tests cannot run in CI: %s" % reason, pytrace=False)
    pytest.skip(reason)


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", *args], env=PODMAN_ENV, capture_output=True, text=True, timeout=timeout,
                            check=False)
    if check and result.returncode != 0:
        pytest.fail("podman %s failed (%d): %s%s" % (args[0], result.returncode, result.stdout[-3000:],
                                                     result.stderr[-3000:]), pytrace=False)
    return result


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("podman") is None:
        unavailable("podman is not installed (make systemd-image installs it)")
    if os.geteuid() != 0:
        unavailable("the container tests use rootful podman: run them as root")
    if podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
        unavailable("no base image %s: run bash tests/systemd/build-image.sh (make systemd-image)" % BASE_IMAGE)
    started = time.monotonic()
    podman("build", "--format", "docker", "--build-arg", "BASE=%s" % BASE_IMAGE, "--tag", IMAGE,
           "--file", str(REPO / "Containerfile"), str(REPO), timeout=900)
    print("image built in %.0f s" % (time.monotonic() - started))
    return IMAGE


@pytest.fixture(scope="module")
def database(pg15: PgCluster) -> Iterator[str]:
    """A login role with a password and a small database: the URL without the password."""
    if pg15.scalar("SELECT 1 FROM pg_roles WHERE rolname = %s" % quote_literal(ROLE)) is None:
        pg15.create_role(ROLE, password=PASSWORD, login=True)
    pg15.set_password(ROLE, PASSWORD)
    if DATABASE in pg15.databases():
        pg15.drop_db(DATABASE)
    pg15.create_db(DATABASE, owner=ROLE)
    pg15.psql("CREATE TABLE ships (id int PRIMARY KEY, name text); "
              "INSERT INTO ships SELECT g, 'ship ' || g FROM generate_series(1, 500) g;", db=DATABASE, user=ROLE,
              password=PASSWORD)
    yield "postgresql://%s@127.0.0.1:%d/%s" % (ROLE, pg15.port, DATABASE)
    pg15.drop_db(DATABASE)


@pytest.fixture
def secret(tmp_path: Path) -> Iterator[str]:
    """A podman secret holding a libpq passfile (the password never goes on a command line)."""
    name = "seawall-pgpass-%s" % uuid.uuid4().hex[:8]
    passfile = tmp_path / "pgpass"
    fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("*:*:*:*:%s\n" % PASSWORD.replace("\\", "\\\\").replace(":", "\\:"))
    podman("secret", "create", name, str(passfile))
    passfile.unlink()
    yield name
    podman("secret", "rm", name, check=False)


@pytest.fixture
def volume() -> Iterator[Path]:
    """The host directory mounted as /backups, owned by the image's user like a fresh named volume would be
    (under a directory that user can reach: pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="seawall-container-", dir="/var/tmp"))
    base.chmod(0o755)
    # The host's engine for `list`: a copy of this checkout's (the image's) readable by the volume's owner.
    shutil.copytree(REPO / "plugins/module_utils/pgbackup", base / "engine" / "seawall_pgbackup",
                    ignore=shutil.ignore_patterns("__pycache__"))
    path = base / "backups"
    path.mkdir(mode=0o700)
    os.chown(path, UID, UID)
    yield path
    shutil.rmtree(base, ignore_errors=True)


def run_args(volume: Path, secret: str, url: str, name: str) -> List[str]:
    return ["--name", name, "--network", "host", "--volume", "%s:/backups" % volume,
            "--secret", "%s,type=mount,target=/run/secrets/pgpass,uid=%d,gid=%d,mode=0400" % (secret, UID, UID),
            "--env", "PGPASSFILE=/run/secrets/pgpass", "--env", "DATABASE_URL=%s" % url]


def host_list(volume: Path) -> List[Dict[str, object]]:
    """`seawall-pgbackup list --all` on the host, against the container's volume, as the volume's owner (the engine
    refuses a backup directory of another user): good backups, and bad or unfinished ones with why."""
    env = dict(os.environ, BACKUP_DIR=str(volume))
    env.pop("BACKUP_CONFIG", None)
    env.pop("DATABASE_URL", None)
    env.update(HOME="/", PYTHONPATH=str(volume.parent / "engine"), PYTHONDONTWRITEBYTECODE="1")
    program = "import sys; from seawall_pgbackup.cli.main import main; sys.exit(main())"
    result = subprocess.run([HOST_PYTHON, "-c", program, "list", "--all", "--json"], env=env, capture_output=True,
                            text=True, timeout=60, check=False, user=UID, group=UID, extra_groups=[], cwd="/")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def assert_secret_not_exposed(name: str) -> None:
    inspect = podman("container", "inspect", name).stdout
    assert PASSWORD not in inspect and PASSWORD.replace("\\", "\\\\") not in inspect


def test_one_shot_full_backup(image: str, database: str, secret: str, volume: Path) -> None:
    name = "seawall-oneshot-%s" % uuid.uuid4().hex[:8]
    try:
        result = podman("run", *run_args(volume, secret, database, name), image, "create", "--type", "full",
                        check=False, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert_secret_not_exposed(name)
        assert PASSWORD not in result.stdout + result.stderr
    finally:
        podman("rm", "--force", name, check=False)
    files = [p for p in volume.rglob("*") if p.is_file()]
    assert files and all(p.stat().st_uid == UID for p in files), [(str(p), p.stat().st_uid) for p in files]
    listed = host_list(volume)
    assert [(b["type"], b["database"], b["good"]) for b in listed] == [("full", DATABASE, True)], listed


def _scheduler_available(image: str) -> bool:
    result = podman("run", "--rm", "--network", "none", image, "--help", check=False)
    return "schedule" in result.stdout.split("}")[0]


def _get(url: str) -> "tuple[int, str]":
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def events(name: str) -> List[Dict[str, object]]:
    """The scheduler's JSON lines (stdout; the jobs' own output is on stderr)."""
    return [json.loads(line) for line in podman("logs", name).stdout.splitlines() if line.startswith("{")]


def test_scheduler_backs_up_serves_metrics_and_stops_cleanly(image: str, database: str, secret: str, volume: Path,
                                                             pg15: PgCluster) -> None:
    if not _scheduler_available(image):
        unavailable("the engine in this branch has no `schedule` command yet")
    name = "seawall-scheduler-%s" % uuid.uuid4().hex[:8]
    port = free_port()
    started = time.monotonic()
    blocker = None
    # The image's entry point and its flags, with a free port instead of 9187 (--network=host shares the host's).
    podman("run", "--detach", *run_args(volume, secret, database, name), "--env", "BACKUP_SCHEDULE_FULL=* * * * *",
           "--env", "SEAWALL_LIVEZ_URL=http://127.0.0.1:%d/livez" % port, image,
           "schedule", "--log-format", "json", "--serve", "127.0.0.1:%d" % port, "--grace", "5")
    try:
        assert_secret_not_exposed(name)
        listed: List[Dict[str, object]] = []
        while time.monotonic() - started < 100 and not listed:
            time.sleep(3)
            state = json.loads(podman("container", "inspect", name).stdout)[0]["State"]
            assert state["Running"], podman("logs", name, check=False).stderr[-3000:]
            listed = [b for b in host_list(volume) if b["good"]]
        logs = podman("logs", name).stdout + podman("logs", name).stderr
        assert listed, "no full backup within 100 s; logs:\n%s" % logs[-3000:]
        assert [e["event"] for e in events(name) if e.get("job") == "full"][:1] == ["scheduled"], logs[-3000:]
        assert PASSWORD not in logs

        status, body = _get("http://127.0.0.1:%d/livez" % port)
        assert status == 200, body
        status, body = _get("http://127.0.0.1:%d/metrics" % port)
        assert status == 200 and "seawall_" in body, body[:2000]
        # The image's HEALTHCHECK (podman runs it on demand; its timer needs a systemd host).
        health = podman("healthcheck", "run", name, check=False)
        assert health.returncode == 0 and "unhealthy" not in health.stdout, health.stdout + health.stderr

        # The next run blocks in pg_dump behind a lock held here, so SIGTERM (podman stop) comes during a run.
        blocker = subprocess.Popen([pg15.bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"],
                                   env=pg15.env(DATABASE), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, text=True)
        assert blocker.stdin is not None
        blocker.stdin.write("BEGIN; LOCK TABLE ships IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(180);\n")
        blocker.stdin.flush()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if [e for e in events(name) if e.get("job") == "full" and e["event"] == "started"][1:]:
                break
            time.sleep(1)
        else:
            pytest.fail("no second run within 90 s:\n%s" % podman("logs", name).stdout[-3000:])
        time.sleep(3)  # pg_dump is waiting for the lock now
        assert not [e for e in events(name) if e.get("job") == "full" and e["event"] == "finished"][1:]

        stop = podman("stop", "--time", "60", name, timeout=120)
        assert stop.returncode == 0
        state = json.loads(podman("container", "inspect", name).stdout)[0]["State"]
        assert state["ExitCode"] == 0, podman("logs", name, check=False).stderr[-3000:]
        seen = [e["event"] for e in events(name)]
        assert "terminating" in seen and seen[-1] == "stopped", seen
        # Only the first backup is listed, good: the run cut short by SIGTERM left nothing listed, not even as
        # unfinished or bad (list --all).
        after = host_list(volume)
        assert [(b["id"], b["good"]) for b in after] == [(listed[0]["id"], True)], after
    finally:
        if blocker is not None:
            blocker.kill()
            blocker.wait()
        podman("rm", "--force", name, check=False)
    print("scheduler run: %.0f s" % (time.monotonic() - started))
