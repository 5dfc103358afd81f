"""The WAL archive against real servers (docs/wal.md): PostgreSQL 15 and 18 archive through our ``wal-push``,
run by the server's own OS user into a repository that user owns (tests/support/archiving.py).

Held here: archived segments come back byte for byte; a duplicate push is a no-op; a different file under an
archived name is refused loudly and nothing is overwritten; kill -9 inside wal-push leaves no record and the
re-push completes it; edited, planted, swapped or downgraded objects are refused by wal-fetch (aes and age);
a deleted segment is reported by ``verify --wal`` and ``health``; copies go to every destination (the S3
stand-in) and wal-fetch falls back to one when the local copy is gone.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Dict, List

import pytest

from seawall_pgbackup.codec.authn import render_manifest
from tests.support.archiving import Archiving, archiving
from tests.support.pgcluster import PgBinariesNotFound
from tests.support.standins import SeaweedFS, StandinMissing, free_port

pytestmark = pytest.mark.postgres

# No checkpoint recycles a segment while a test reads pg_wal (the originals are compared with what comes back).
QUIET = {"checkpoint_timeout": "1h", "max_wal_size": "4GB", "min_wal_size": "1GB"}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(folder: Path) -> Dict[str, str]:
    return {name: _sha(folder / name) for name in sorted(os.listdir(folder))} if folder.is_dir() else {}


def _start(major: int, **kw):
    try:
        return archiving(major, settings=QUIET, **kw)
    except PgBinariesNotFound as exc:  # pragma: no cover - depends on the host
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL %d binaries missing in CI: %s" % (major, exc), pytrace=False)
        pytest.skip("PostgreSQL %d binaries not installed: %s" % (major, exc))


def _batch(arch: Archiving, number: int) -> str:
    """Some rows, then a segment switch; returns the segment that was closed (and waits for its archiving)."""
    arch.cluster.psql("CREATE TABLE IF NOT EXISTS batches (n int, at timestamptz default now(), filler text);"
                      "INSERT INTO batches SELECT %d, now(), repeat(md5(g::text), 20) FROM generate_series(1, 2000) g"
                      % number)
    name = arch.switch_wal()
    arch.wait_archived(name)
    return name


def _one_line(done) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def _fetch(arch: Archiving, name: str, *extra: str):
    target = arch.base / ("fetched-%s" % uuid.uuid4().hex[:6])
    done = arch.cli_as_server("wal-fetch", name, str(target), *extra)
    return done, target


def _record_of(arch: Archiving, name: str) -> Path:
    [record] = [arch.wal_folder() / n for n in arch.records() if n.startswith(name + "-")]
    return record


def _data_of(arch: Archiving, name: str) -> Path:
    [data] = [arch.wal_folder() / n for n in os.listdir(arch.wal_folder())
              if n.startswith(name + "-") and not n.endswith(".json")]
    return data


@pytest.mark.parametrize("major,encryption", [(15, "aes"), (18, "age")])
def test_archive_round_trip_duplicates_conflicts_and_tampering(major, encryption):
    pytest.importorskip("pyrage") if encryption == "age" else None
    with _start(major, encryption=encryption) as arch:
        first, second, third = (_batch(arch, n) for n in (1, 2, 3))
        pg_wal = arch.cluster.data_dir / "pg_wal"
        originals = {name: (pg_wal / name).read_bytes() for name in (first, second, third)}
        # every archived segment comes back byte for byte
        for name, data in originals.items():
            done, target = _fetch(arch, name)
            assert done.returncode == 0, done.stderr
            assert target.read_bytes() == data
        assert all(json.loads(_record_of(arch, n).read_text())["auth"]["algorithm"]
                   == ("ed25519" if encryption == "age" else "hmac-sha256") for n in originals)
        assert all(_data_of(arch, n).name.endswith(".age" if encryption == "age" else ".enc") for n in originals)

        # the same file again: exit 0, nothing rewritten
        copies = arch.owned_dir("copies")
        before = _snapshot(arch.wal_folder())
        mtimes = {n: os.stat(arch.wal_folder() / n).st_mtime_ns for n in before}
        again = arch.cli_as_server("wal-push", "--json", str(arch.owned_file(copies, second, originals[second])))
        assert again.returncode == 0 and json.loads(again.stdout)["result"] == "already archived", again.stderr
        assert {n: os.stat(arch.wal_folder() / n).st_mtime_ns for n in before} == mtimes

        # another file under an archived name: refused loudly, nothing overwritten
        other = arch.owned_dir("other")
        changed = bytearray(originals[second])
        changed[8192] ^= 0xFF
        refused = arch.cli_as_server("wal-push", str(arch.owned_file(other, second, bytes(changed))))
        assert refused.returncode == 8 and "differs from the one already archived" in _one_line(refused)
        assert _snapshot(arch.wal_folder()) == before

        # an edited record (canonical form, one field changed): its signature fails; nothing is written
        record = _record_of(arch, first)
        kept = record.read_bytes()
        document = json.loads(kept)
        document["modified_at"] = "2031-01-01T00:00:00Z"
        record.write_bytes(render_manifest(document))
        done, target = _fetch(arch, first)
        assert done.returncode == 208 and "signature" in _one_line(done) and not target.exists()
        record.write_bytes(kept)

        # one flipped byte in an encrypted data object: authentication fails, nothing is written
        data_two = _data_of(arch, second)
        kept_two = data_two.read_bytes()
        flipped = bytearray(kept_two)
        flipped[len(flipped) // 2] ^= 0x01
        data_two.write_bytes(bytes(flipped))
        done, target = _fetch(arch, second)
        assert done.returncode == 208 and not target.exists(), done.stderr
        data_two.write_bytes(kept_two)

        # one segment's data object swapped in for another's: the binding (and the sha256) refuse it
        one, two = _data_of(arch, first), _data_of(arch, second)
        one_bytes = one.read_bytes()
        one.write_bytes(two.read_bytes())
        done, target = _fetch(arch, first)
        assert done.returncode == 208 and not target.exists(), done.stderr
        one.write_bytes(one_bytes)

        # a planted file: unsigned record and unencrypted data (a downgrade) for a name never archived
        planted = "%s%08X" % (third[:16], int(third[16:], 16) + 5)
        data = gzip.compress(originals[third])
        d16 = hashlib.sha256(originals[third]).hexdigest()[:16]
        stored = "%s-%s.gz" % (planted, d16)
        arch.owned_file(arch.wal_folder(), stored, data)
        arch.owned_file(arch.wal_folder(), "%s-%s.json" % (planted, d16), render_manifest({
            "format": 1, "repository": "default", "wal": planted,
            "sha256": hashlib.sha256(originals[third]).hexdigest(),
            "size": len(originals[third]), "modified_at": "2026-01-01T00:00:00Z", "archived_at": "2026-01-01T00:00:00Z",
            "stored": {"name": stored, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                       "compression": "gzip", "encryption": None}}))
        done, target = _fetch(arch, planted)
        assert done.returncode == 208 and "not signed" in _one_line(done) and not target.exists()
        verified = arch.cli_as_server("verify", "--wal", "--json")
        result = json.loads(verified.stdout)[0]
        assert verified.returncode == 8 and not result["ok"] and result["refused"], verified.stderr
        # the untouched ones still come back
        done, target = _fetch(arch, first)
        assert done.returncode == 0 and target.read_bytes() == originals[first]
        # absent: exit 1 without a word (restore_command asks for files past the end)
        done, target = _fetch(arch, "%s%08X" % (third[:16], int(third[16:], 16) + 40))
        assert (done.returncode, done.stderr) == (1, "") and not target.exists()


@pytest.mark.parametrize("step", ["wal-push-data", "wal-push-record"])
def test_kill_9_inside_wal_push(step):
    with _start(15) as arch:
        name = _batch(arch, 1)
        segment = (arch.cluster.data_dir / "pg_wal" / name).read_bytes()
        source = arch.owned_file(arch.owned_dir("source"), name, segment)
        fresh = arch.base / "fresh"  # a second repository that has never seen this segment
        marker = arch.base / "paused"
        running = arch.popen_as_server("wal-push", "--backup-dir", str(fresh), str(source),
                                       env={"SEAWALL_TEST_PAUSE": step, "SEAWALL_TEST_PAUSE_FILE": str(marker),
                                            "SEAWALL_TEST_PAUSE_SECONDS": "120"})
        deadline = time.monotonic() + 60
        while not (marker.exists() and step in marker.read_text()):
            assert running.poll() is None and time.monotonic() < deadline, running.communicate()
            time.sleep(0.05)
        os.kill(running.pid, signal.SIGKILL)
        running.wait(30)
        left = os.listdir(fresh / "wal")
        assert not [n for n in left if n.endswith(".json") and not n.startswith(".")], left  # no record: not archived
        if step == "wal-push-record":
            assert [n for n in left if n.startswith(name + "-")], left  # the data object, without its record
        else:
            assert left and all(n.startswith(".") for n in left), left  # only the temp file
        absent, target = _fetch(arch, name, "--backup-dir", str(fresh))
        assert absent.returncode == 1 and not target.exists()
        # the re-push (PostgreSQL retries archive_command) completes it; the fetch is byte-identical
        pushed = arch.cli_as_server("wal-push", "--json", "--backup-dir", str(fresh), str(source))
        assert pushed.returncode == 0 and json.loads(pushed.stdout)["result"] == "pushed", pushed.stderr
        done, target = _fetch(arch, name, "--backup-dir", str(fresh))
        assert done.returncode == 0 and target.read_bytes() == segment
        verified = arch.cli_as_server("verify", "--wal", "--backup-dir", str(fresh), "--json")
        assert verified.returncode == 0 and json.loads(verified.stdout)[0]["segments"] == 1, verified.stdout


@pytest.mark.parametrize("major", [15, 18])
def test_a_deleted_segment_is_reported_by_verify_and_health(major):
    with _start(major) as arch:
        names = [_batch(arch, n) for n in (1, 2, 3)]
        healthy = json.loads(arch.cli_as_server("health", "--json").stdout)
        [wal] = [c for c in healthy["checks"] if c["check"] == "wal"]
        assert wal["status"] == "ok" and wal["newest"] >= names[-1], wal
        ok = arch.cli_as_server("verify", "--wal")
        assert ok.returncode == 0 and ok.stdout.startswith("OK  wal: "), ok.stdout + ok.stderr
        # the middle one deleted from the archive
        _record_of(arch, names[1]).unlink()
        _data_of(arch, names[1]).unlink()
        bad = arch.cli_as_server("verify", "--wal", "--json")
        result = json.loads(bad.stdout)[0]
        assert bad.returncode == 8 and result["gaps"] == [names[1]], bad.stdout
        assert names[1] in _one_line(bad)
        report = json.loads(arch.cli_as_server("health", "--json").stdout)
        [wal] = [c for c in report["checks"] if c["check"] == "wal"]
        assert wal["status"] == "critical" and names[1] in wal["reason"] and wal["gaps"] == [names[1]]
        # the metrics say so too
        metrics = arch.cli_as_server("health")  # a monitored run: it rebuilds the metrics file in logs/
        assert metrics.returncode == 2
        text = (arch.backup_dir / "logs" / "seawall_pgbackup.prom").read_text()
        assert 'seawall_backup_wal_gaps{host="' in text and _metric(text, "seawall_backup_wal_gaps") == [1.0]


def _metric(text: str, name: str) -> List[float]:
    return [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    try:
        server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    except StandinMissing as exc:
        if os.environ.get("CI"):
            pytest.fail("SeaweedFS missing in CI: %s" % exc, pytrace=False)
        pytest.skip("SeaweedFS not installed: %s" % exc)
    try:
        yield server
    finally:
        server.stop()


def test_push_copies_to_every_destination_and_fetch_falls_back(s3):
    prefix = "wal-%s" % uuid.uuid4().hex[:8]
    credentials = "".join("%s=%s\n" % kv for kv in s3.env().items())
    second = {"type": "local"}
    with _start(15, encryption="aes") as arch:
        # the credentials in a 0600 file the server's user reads: never in the server's environment or argv
        secret = arch.owned_file(arch.base / "keys", "s3.credentials", credentials.encode())
        second["path"] = str(arch.owned_dir("second-disk"))
        arch.write_config(dict(arch.config, destinations={
            "s3": {"type": "s3", "endpoint": s3.endpoint, "bucket": "backups", "prefix": prefix,
                   "region": "us-east-1", "credentialsFile": str(secret)},
            "disk": second}))
        names = [_batch(arch, n) for n in (1, 2)]
        # S3 unreachable: the archiver fails and retries; the local copy is complete all the same, and once the
        # destination is back the retry uploads it (the local part is a no-op)
        good = arch.config
        arch.write_config(dict(good, destinations=dict(good["destinations"], s3=dict(
            good["destinations"]["s3"], endpoint="http://127.0.0.1:%d" % free_port(), retries=0, retryTimeout=1))))
        stuck = arch.switch_wal()
        deadline = time.monotonic() + 90
        while int(arch.cluster.scalar("SELECT failed_count FROM pg_stat_archiver") or 0) == 0:
            assert time.monotonic() < deadline, arch.cluster.log_file.read_text(errors="replace")[-2000:]
            time.sleep(0.2)
        assert [n for n in arch.records() if n.startswith(stuck + "-")]  # here already
        arch.write_config(good)
        arch.wait_archived(stuck)
        names.append(stuck)
        originals = {n: (arch.cluster.data_dir / "pg_wal" / n).read_bytes() for n in names}
        for destination in ("s3", "disk"):
            listed = arch.cli_as_server("verify", "--wal", "--destination", destination, "--json")
            result = json.loads(listed.stdout)[0]
            assert listed.returncode == 0 and result["segments"] >= 2 and result["ok"], listed.stdout + listed.stderr
        # the local copy gone: fetched from the first destination that has it, checked all the same
        for name in names:
            _record_of(arch, name).unlink()
            _data_of(arch, name).unlink()
        for name in names:
            done, target = _fetch(arch, name)
            assert done.returncode == 0 and target.read_bytes() == originals[name], done.stderr
        assert s3.env()["AWS_SECRET_ACCESS_KEY"] not in arch.cluster.log_file.read_text(errors="replace")
