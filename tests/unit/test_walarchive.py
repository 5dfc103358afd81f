"""The WAL archive (repo/walarchive.py) on a local directory: push, fetch, records, continuity, retention helpers."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pytest

from seawall_pgbackup.codec.authn import render_manifest
from seawall_pgbackup.codec.keyring import write_key_file
from seawall_pgbackup.config.settings import load_config
from seawall_pgbackup.core.errors import ConfigError, VerifyError
from seawall_pgbackup.repo.walarchive import (DEFAULT_SEGMENT_SIZE, Segment, WalArchive, continuity, format_lsn,
                                              lsn_to_segno, parse_history, parse_lsn, wal_name)

SEG = 1 << 20  # 1 MiB segments keep the tests fast (initdb --wal-segsize=1)


def _segment_bytes(seed: int, size: int = SEG) -> bytes:
    block = ("segment %d " % seed).encode() * 64
    return (block * (size // len(block) + 1))[:size]


def _env(tmp_path, encryption: bool = False, **extra) -> dict:
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {"BACKUP_DIR": str(backup_dir)}
    if encryption:
        keys = tmp_path / "keys"
        if not keys.exists():
            write_key_file(str(keys), str(backup_dir))
        env.update(BACKUP_ENCRYPTION="true", BACKUP_ENCRYPTION_KEYRING=str(keys))
    env.update(extra)
    return env


def _write(folder, name: str, data: bytes) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "wb") as handle:
        handle.write(data)
    return path


@pytest.fixture(name="pgwal")
def _pgwal(tmp_path):
    return str(tmp_path / "pg_wal")


@pytest.mark.parametrize("encryption", [False, True])
def test_push_fetch_round_trip_and_idempotence(tmp_path, pgwal, encryption):
    cfg = load_config(env=_env(tmp_path, encryption))
    archive = WalArchive(cfg)
    name = wal_name(1, 3, SEG)
    data = _segment_bytes(3)
    path = _write(pgwal, name, data)
    first = archive.push(path)
    assert first["result"] == "pushed" and first["wal"] == name
    stored = sorted(os.listdir(os.path.join(cfg.backup_dir, "wal")))
    assert len(stored) == 2 and any(n.endswith(".json") for n in stored)
    assert any(n.endswith(".gz.enc" if encryption else ".gz") for n in stored)
    record = json.loads(open(os.path.join(cfg.backup_dir, "wal", name + "-%s.json" % first["sha256"][:16])).read())
    assert record["format"] == 1 and record["wal"] == name and record["size"] == SEG
    assert ("auth" in record) == encryption and record["repository"] == "default"
    # the same content again: a no-op, nothing rewritten
    mtimes = {n: os.stat(os.path.join(cfg.backup_dir, "wal", n)).st_mtime_ns for n in stored}
    assert archive.push(path)["result"] == "already archived"
    assert {n: os.stat(os.path.join(cfg.backup_dir, "wal", n)).st_mtime_ns for n in stored} == mtimes
    out = str(tmp_path / "restore" / "RECOVERYXLOG")
    os.makedirs(os.path.dirname(out))
    assert archive.fetch(name, out) is True
    assert open(out, "rb").read() == data
    assert archive.fetch(wal_name(1, 4, SEG), out + "2") is False and not os.path.exists(out + "2")
    [segment] = archive.segments()
    assert (segment.wal, segment.timeline, segment.segno, segment.kind, segment.size) == (name, 1, 3, "segment", SEG)
    assert archive.check_data(segment) is None


def test_a_different_file_under_an_archived_name_is_refused(tmp_path, pgwal):
    cfg = load_config(env=_env(tmp_path))
    archive = WalArchive(cfg)
    name = wal_name(1, 1, SEG)
    archive.push(_write(pgwal, name, _segment_bytes(1)))
    before = sorted(os.listdir(os.path.join(cfg.backup_dir, "wal")))
    with pytest.raises(VerifyError, match="differs from the one already archived"):
        archive.push(_write(pgwal, name, _segment_bytes(2)))
    assert sorted(os.listdir(os.path.join(cfg.backup_dir, "wal"))) == before
    out = str(tmp_path / "x")
    assert archive.fetch(name, out) and open(out, "rb").read() == _segment_bytes(1)


def test_other_names_are_refused(tmp_path, pgwal):
    archive = WalArchive(load_config(env=_env(tmp_path)))
    for name in ("postgresql.conf", "000000010000000000000001.tmp", "00000001.history.x",
                 "00000001000000000000000G"):
        with pytest.raises(ConfigError, match="not a WAL file name"):
            archive.push(_write(pgwal, os.path.basename(name), b"x"))
    with pytest.raises(ConfigError, match="not a WAL file name"):
        archive.fetch("../../etc/passwd", str(tmp_path / "y"))


def test_history_partial_and_backup_files(tmp_path, pgwal):
    archive = WalArchive(load_config(env=_env(tmp_path)))
    history = b"1\t0/3000000\tno recovery target specified\n\n2\t0/5000000\tat restore point \"x\"\n"
    archive.push(_write(pgwal, "00000003.history", history))
    archive.push(_write(pgwal, wal_name(1, 2, SEG) + ".partial", _segment_bytes(9)))
    archive.push(_write(pgwal, wal_name(1, 2, SEG) + ".00000028.backup", b"START WAL LOCATION: 0/2000028\n"))
    kinds = {s.kind: s for s in archive.segments()}
    assert set(kinds) == {"history", "partial", "backup"}
    assert kinds["history"].history == ((1, "0/3000000"), (2, "0/5000000")) and kinds["history"].timeline == 3
    assert kinds["partial"].segno == 2 and kinds["backup"].segno is None
    assert parse_history(history) == ((1, "0/3000000"), (2, "0/5000000"))


def test_lsn_helpers():
    assert parse_lsn("0/3000028") == 0x3000028 and format_lsn(0x100000028) == "1/28"
    assert lsn_to_segno("0/3000028") == 3 and lsn_to_segno("1/0") == 256
    assert wal_name(1, 256) == "000000010000000100000000" and wal_name(2, 3) == "000000020000000000000003"
    assert wal_name(1, 4096 + 5, SEG) == "000000010000000100000005"
    with pytest.raises(ConfigError):
        parse_lsn("nonsense")
    assert DEFAULT_SEGMENT_SIZE == 16 << 20


def _fake(tli: int, segno: int, seg: int = SEG, kind: str = "segment", history=()) -> Segment:
    from seawall_pgbackup.core.clock import utc_now
    now = utc_now()
    name = "%08X.history" % tli if kind == "history" else wal_name(tli, segno, seg)
    return Segment(wal=name, timeline=tli, segno=None if kind == "history" else segno, digest="0" * 64,
                   size=seg if kind != "history" else 40, stored=name + "-0.gz", record=name + "-0.json",
                   modified_at=now, archived_at=now, kind=kind, history=tuple(history))


def test_continuity_gaps_and_reach():
    segments = [_fake(1, n) for n in (2, 3, 4, 6, 7)]
    result = continuity(segments, format_lsn(2 * SEG + 40), 1)
    assert result.reached_lsn == format_lsn(5 * SEG) and result.last.segno == 4
    assert result.gaps == [wal_name(1, 5, SEG)] and result.timelines == [1]
    assert result.reaches(format_lsn(5 * SEG - 1)) and not result.reaches(format_lsn(5 * SEG + 1))
    # until an LSN before the hole: nothing missing
    assert continuity(segments, format_lsn(2 * SEG), 1, until_lsn=format_lsn(3 * SEG + 5)).gaps == []
    # the first segment itself missing
    missing = continuity(segments, format_lsn(1 * SEG), 1)
    assert missing.last is None and missing.reached_lsn == format_lsn(SEG)
    assert missing.gaps == [wal_name(1, 1, SEG), wal_name(1, 5, SEG)]


def test_continuity_follows_a_timeline_switch():
    # timeline 2 branched from 1 at 0/4.5 segments: segment 4 is read from timeline 2 (its copy + new WAL)
    switch = format_lsn(4 * SEG + SEG // 2)
    segments = [_fake(1, 2), _fake(1, 3), _fake(1, 4, kind="partial"), _fake(2, 4), _fake(2, 5),
                _fake(2, 0, kind="history", history=[(1, switch)])]
    segments = [s for s in segments if s.kind != "partial"]
    result = continuity(segments, format_lsn(2 * SEG), 1)
    assert result.timelines == [1, 2] and result.reached_lsn == format_lsn(6 * SEG) and result.gaps == []
    assert result.target_timeline == 2
    # a branch that left timeline 1 before the start is not followed
    early = [_fake(1, 2), _fake(1, 3), _fake(2, 0, kind="history", history=[(1, format_lsn(SEG))]), _fake(2, 3)]
    assert continuity(early, format_lsn(2 * SEG), 1).timelines == [1]
    # a hole on the new timeline is named with its timeline
    holed = [s for s in segments if not (s.timeline == 2 and s.segno == 4)]
    result = continuity(holed, format_lsn(2 * SEG), 1)
    assert result.reached_lsn == format_lsn(4 * SEG) and result.gaps == [wal_name(2, 4, SEG)]


def test_planted_and_edited_records_are_refused(tmp_path, pgwal):
    env = _env(tmp_path, encryption=True)
    cfg = load_config(env=env)
    archive = WalArchive(cfg)
    name = wal_name(1, 1, SEG)
    pushed = archive.push(_write(pgwal, name, _segment_bytes(1)))
    folder = os.path.join(cfg.backup_dir, "wal")
    record_path = os.path.join(folder, "%s-%s.json" % (name, pushed["sha256"][:16]))
    original = open(record_path, "rb").read()
    # an edited record (its archive time changed): its signature fails
    document = json.loads(original)
    document["archived_at"] = "2020-01-01T00:00:00Z"
    with open(record_path, "wb") as handle:
        handle.write(render_manifest(document))  # canonical form: only the signature tells
    assert archive.segments() == [] and "signature" in archive.refused()[0][1]
    with pytest.raises(VerifyError, match="signature"):
        archive.fetch(name, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")
    # a planted unsigned record + unencrypted data for another name
    with open(record_path, "wb") as handle:
        handle.write(original)
    plain = WalArchive(load_config(env=_env(tmp_path / "other")))
    other = wal_name(1, 2, SEG)
    planted = plain.push(_write(pgwal, other, _segment_bytes(2)))
    for entry in os.listdir(os.path.join(str(tmp_path / "other" / "backups"), "wal")):
        os.rename(os.path.join(str(tmp_path / "other" / "backups"), "wal", entry), os.path.join(folder, entry))
    assert [s.wal for s in archive.segments()] == [name]
    assert any("not signed" in why for _key, why in archive.refused())
    with pytest.raises(VerifyError, match="not signed"):
        archive.fetch(other, str(tmp_path / "out"))
    assert planted["result"] == "pushed"


def test_swapped_data_object_is_refused(tmp_path, pgwal):
    cfg = load_config(env=_env(tmp_path, encryption=True))
    archive = WalArchive(cfg)
    one, two = wal_name(1, 1, SEG), wal_name(1, 2, SEG)
    archive.push(_write(pgwal, one, _segment_bytes(1)))
    archive.push(_write(pgwal, two, _segment_bytes(2)))
    folder = os.path.join(cfg.backup_dir, "wal")
    data = {n.split("-")[0]: n for n in os.listdir(folder) if n.endswith(".enc")}
    # the data of segment 2 in place of segment 1's: the binding (and sha256) refuse it
    os.replace(os.path.join(folder, data[two]), os.path.join(folder, data[one]))
    with pytest.raises(VerifyError):
        archive.fetch(one, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")
    [segment] = [s for s in archive.segments() if s.wal == one]
    assert archive.check_data(segment) is not None


def test_unencrypted_data_flipped_byte_is_refused(tmp_path, pgwal):
    cfg = load_config(env=_env(tmp_path))
    archive = WalArchive(cfg)
    name = wal_name(1, 1, SEG)
    archive.push(_write(pgwal, name, _segment_bytes(1)))
    folder = os.path.join(cfg.backup_dir, "wal")
    [data] = [n for n in os.listdir(folder) if n.endswith(".gz")]
    raw = bytearray(open(os.path.join(folder, data), "rb").read())
    raw[len(raw) // 2] ^= 0xFF
    open(os.path.join(folder, data), "wb").write(bytes(raw))
    with pytest.raises(VerifyError):
        archive.fetch(name, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")


def test_remove_and_orphans(tmp_path, pgwal):
    cfg = load_config(env=_env(tmp_path))
    archive = WalArchive(cfg)
    for n in (1, 2, 3):
        archive.push(_write(pgwal, wal_name(1, n, SEG), _segment_bytes(n)))
    folder = os.path.join(cfg.backup_dir, "wal")
    # a killed push: a data object without its record, and a temp file
    _write(folder, wal_name(1, 4, SEG) + "-0123456789abcdef.gz", b"half")
    _write(folder, "." + wal_name(1, 5, SEG) + "-0123456789abcdef.gz.123-abcd1234.tmp", b"half")
    _write(folder, "README", b"someone else's")
    assert archive.orphans(timedelta(hours=1)) == []
    orphans = archive.orphans(timedelta(0))
    assert sorted(o.key for o in orphans) == sorted(
        ["wal/" + wal_name(1, 4, SEG) + "-0123456789abcdef.gz",
         "wal/." + wal_name(1, 5, SEG) + "-0123456789abcdef.gz.123-abcd1234.tmp"])
    assert len(archive.remove_orphans(timedelta(0))) == 2
    segments = archive.segments()
    archive.remove(segments[:2])
    assert [s.segno for s in archive.segments()] == [3]
    assert sorted(os.listdir(folder)) == sorted(["README", segments[2].record, segments[2].stored])


def test_push_uploads_to_destinations_and_fetch_falls_back(tmp_path, pgwal):
    second = tmp_path / "second"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"backup": {"destinations": {"disk2": {"type": "local", "path": str(second)}}}}))
    cfg = load_config(env=_env(tmp_path, encryption=True), config_file=str(config))
    archive = WalArchive(cfg)
    name = wal_name(1, 7, SEG)
    result = archive.push(_write(pgwal, name, _segment_bytes(7)))
    assert [d["result"] for d in result["destinations"]] == ["pushed"]
    assert sorted(os.listdir(second / "wal")) == sorted(os.listdir(os.path.join(cfg.backup_dir, "wal")))
    assert archive.push(os.path.join(pgwal, name))["destinations"][0]["result"] == "already archived"
    at_destination = WalArchive(cfg, destination="disk2")
    assert [s.wal for s in at_destination.segments()] == [name]
    for entry in os.listdir(os.path.join(cfg.backup_dir, "wal")):
        os.unlink(os.path.join(cfg.backup_dir, "wal", entry))
    out = str(tmp_path / "out")
    assert archive.fetch(name, out) and open(out, "rb").read() == _segment_bytes(7)
    # the destination lost the data object: the local re-push uploads it again
    archive.push(os.path.join(pgwal, name))
    os.unlink(os.path.join(second, "wal", at_destination.segments()[0].stored))
    assert archive.push(os.path.join(pgwal, name))["destinations"][0]["result"] == "pushed"


def test_a_deleted_segment_is_reported_by_verify_health_and_metrics(tmp_path, pgwal):
    from seawall_pgbackup.observe.metrics import collect
    from seawall_pgbackup.ops.health import health
    from seawall_pgbackup.ops.wal import verify_wal

    cfg = load_config(env=_env(tmp_path))
    archive = WalArchive(cfg)
    assert verify_wal(cfg)["ok"] and not verify_wal(cfg)["exists"]
    assert "wal" not in {c["check"] for c in health(cfg, connect=False)["checks"]}  # no archiving: no check
    os.makedirs(os.path.join(cfg.backup_dir, "wal"), mode=0o700)  # what the tooling role makes: archiving is on
    checks = {c["check"]: c for c in health(cfg, connect=False)["checks"]}
    assert checks["wal"]["status"] == "warning" and "nothing archived" in checks["wal"]["reason"]
    assert [v for _labels, v in collect(cfg)["wal_segments"]] == [0]
    for n in (1, 2, 3, 4):
        archive.push(_write(pgwal, wal_name(1, n, SEG), _segment_bytes(n)))
    checks = {c["check"]: c for c in health(cfg, connect=False)["checks"]}
    assert checks["wal"]["status"] == "ok" and checks["wal"]["newest"] == wal_name(1, 4, SEG)
    result = verify_wal(cfg)
    assert result["ok"] and result["gaps"] == [] and result["reached_lsn"] == format_lsn(5 * SEG)
    samples = collect(cfg)
    assert [v for _labels, v in samples["wal_segments"]] == [4] and [v for _l, v in samples["wal_gaps"]] == [0]
    [gone] = [s for s in archive.segments() if s.segno == 2]
    os.unlink(os.path.join(cfg.backup_dir, "wal", gone.record))
    os.unlink(os.path.join(cfg.backup_dir, "wal", gone.stored))
    result = verify_wal(cfg)
    assert not result["ok"] and result["gaps"] == [wal_name(1, 2, SEG)] and wal_name(1, 2, SEG) in result["details"]
    checks = {c["check"]: c for c in health(cfg, connect=False)["checks"]}
    assert checks["wal"]["status"] == "critical" and wal_name(1, 2, SEG) in checks["wal"]["reason"]
    assert [v for _l, v in collect(cfg)["wal_gaps"]] == [1]
    # a data object damaged: verify reads it back and names it; checksum level too
    [third] = [s for s in archive.segments() if s.segno == 3]
    path = os.path.join(cfg.backup_dir, "wal", third.stored)
    raw = bytearray(open(path, "rb").read())
    raw[-20] ^= 1
    open(path, "wb").write(bytes(raw))
    for level in ("checksum", "archive"):
        found = verify_wal(cfg, level=level)
        assert [b["wal"] for b in found["bad"]] == [third.wal], level


def test_check_wal_thresholds():
    from seawall_pgbackup.ops.health_checks import check_wal

    base = {"exists": True, "gaps": [], "refused": [], "segments": 3, "where": "/x", "from_lsn": "0/1000000",
            "newest": {"wal": wal_name(1, 3)}}
    assert check_wal(None) is None and check_wal(dict(base, exists=False)) is None
    waiting = check_wal(dict(base, exists=False, configured=True, newest=None))
    assert waiting["status"] == "warning" and "nothing archived" in waiting["reason"]
    assert check_wal(dict(base, newest_age_seconds=60))["status"] == "ok"
    assert check_wal(dict(base, newest_age_seconds=3 * 3600))["status"] == "warning"
    assert check_wal(dict(base, newest_age_seconds=30 * 3600))["status"] == "critical"
    refused = check_wal(dict(base, newest_age_seconds=60, refused=[{"record": "wal/x.json", "reason": "is bad"}]))
    assert refused["status"] == "warning" and "not trusted" in refused["reason"]
    assert check_wal(dict(base, newest_age_seconds=None, newest=None))["status"] == "warning"
    future = {"wal": wal_name(1, 3), "future": True, "modified_at": "2099-01-01T00:00:00Z"}
    ahead = check_wal(dict(base, newest_age_seconds=0, newest=future))
    assert ahead["status"] == "warning" and "clock" in ahead["reason"]


def test_the_cli_commands(tmp_path, pgwal, capsys):
    from seawall_pgbackup.cli.main import main

    env = _env(tmp_path)
    name = wal_name(1, 9, SEG)
    path = _write(pgwal, name, _segment_bytes(9))
    args = ["--backup-dir", env["BACKUP_DIR"]]
    assert main(args + ["wal-push", path]) == 0 and capsys.readouterr().out == ""
    assert main(args + ["wal-push", "--json", path]) == 0
    assert json.loads(capsys.readouterr().out)["result"] == "already archived"
    out = str(tmp_path / "fetched")
    assert main(args + ["wal-fetch", name, out]) == 0 and open(out, "rb").read() == _segment_bytes(9)
    assert main(args + ["wal-fetch", wal_name(1, 10, SEG), out + "x"]) == 1
    assert capsys.readouterr().err == ""  # absent: quiet
    _write(pgwal, name, _segment_bytes(10))
    assert main(args + ["wal-push", path]) == 8
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "differs from the one already archived" in err
    assert main(args + ["verify", "--wal"]) == 0 and capsys.readouterr().out.startswith("OK  wal: ")
    assert main(args + ["wal-push", str(tmp_path / "nothing" / name)]) == 3
    assert main(args + ["wal-push", _write(pgwal, "backup_label", b"x")]) == 4


def test_continuity_property():
    """Against a brute-force walk on one timeline: reached is the end of the run of present segments from the
    start (stopping after the one holding ``until``), and gaps are exactly the absent numbers from there to the
    newest present one (no further than ``until``'s)."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.given(present=st.sets(st.integers(0, 40), max_size=30), start=st.integers(0, 40),
                      offset=st.integers(0, SEG - 1), until=st.one_of(st.none(), st.integers(0, 45 * SEG)))
    @hypothesis.settings(max_examples=300, deadline=None)
    def check(present, start, offset, until):
        segments = [_fake(1, n) for n in sorted(present)]
        result = continuity(segments, format_lsn(start * SEG + offset), 1,
                            until_lsn=format_lsn(until) if until is not None else None, seg_size=SEG)
        n = start
        while n in present and (until is None or n == start or n * SEG <= until):
            n += 1
        assert parse_lsn(result.reached_lsn) == (n * SEG if n > start else start * SEG + offset)
        assert (result.last.segno if result.last else None) == (n - 1 if n > start else None)
        later = [m for m in present if m >= n]
        upper = (max(later) if until is None else min(max(later), until // SEG)) if later else n - 1
        assert result.gaps == [wal_name(1, m, SEG) for m in range(n, upper + 1) if m not in present]
        if until is not None:
            taken = n > start and n * SEG > until  # the segment holding the target is in the run
            assert result.reaches(format_lsn(until)) == (taken or until <= start * SEG + offset)

    check()


def test_status_takes_the_newest_in_wal_order_and_flags_a_future_date(tmp_path, pgwal):
    from seawall_pgbackup.ops.wal import wal_status

    cfg = load_config(env=_env(tmp_path))
    archive = WalArchive(cfg)
    ahead = _write(pgwal, wal_name(1, 1, SEG), _segment_bytes(1))
    os.utime(ahead, (4102444800, 4102444800))  # 2100: pushed while the clock ran ahead
    archive.push(ahead)
    archive.push(_write(pgwal, wal_name(1, 2, SEG), _segment_bytes(2)))
    status = wal_status(cfg)
    assert status["newest"]["wal"] == wal_name(1, 2, SEG) and not status["newest"]["future"]
    archive.remove([s for s in archive.segments() if s.segno == 2])
    status = wal_status(cfg)
    assert status["newest"]["future"] and status["newest_age_seconds"] == 0


@pytest.mark.parametrize("step", ["wal-push-data", "wal-push-record"])
def test_two_pushes_of_the_same_file_at_once_leave_a_record_that_matches_its_data(tmp_path, pgwal, monkeypatch,
                                                                                  step):
    """archive_command retried while the first run still works (or pg_receivewal's copy): encrypted stored bytes
    differ from run to run, so the record left must name the data object left, whatever the interleaving."""
    from seawall_pgbackup.repo import walarchive

    cfg = load_config(env=_env(tmp_path, encryption=True))
    name = wal_name(1, 5, SEG)
    path = _write(pgwal, name, _segment_bytes(5))
    other_run = []
    started = []

    def interleave(at):
        if at == step and not started:
            started.append(at)
            other_run.append(WalArchive(cfg).push(path))  # the second run, start to end, inside the first

    monkeypatch.setattr(walarchive, "pause", interleave)
    WalArchive(cfg).push(path)
    assert other_run and other_run[0]["result"] == "pushed"
    archive = WalArchive(cfg)
    [segment] = archive.segments()
    assert archive.check_data(segment) is None
    out = str(tmp_path / "out")
    assert archive.fetch(name, out) is True and open(out, "rb").read() == _segment_bytes(5)


def test_wal_fetch_failures_other_than_absent_make_postgresql_abort_recovery(tmp_path, pgwal, capsys):
    """PostgreSQL takes any restore_command exit status up to 125 for "not archived": recovery ends there and,
    with recovery_target_timeline = latest, promotes, silently losing everything after a damaged or planted
    segment (or a destination that did not answer). Above 125 it stops recovery with FATAL instead."""
    from seawall_pgbackup.cli.main import main

    env = _env(tmp_path)
    name = wal_name(1, 9, SEG)
    pushed = WalArchive(load_config(env=env)).push(_write(pgwal, name, _segment_bytes(9)))
    folder = os.path.join(env["BACKUP_DIR"], "wal")
    data = [n for n in os.listdir(folder) if n.endswith(".gz")][0]
    with open(os.path.join(folder, data), "r+b") as handle:
        handle.seek(40)
        handle.write(b"\xff" * 8)
    args = ["--backup-dir", env["BACKUP_DIR"]]
    out = str(tmp_path / "fetched")
    assert main(args + ["wal-fetch", name, out]) == 208 and not os.path.exists(out)  # VerifyError's 8, + 200
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and name in err and pushed["result"] == "pushed"
    assert main(args + ["wal-fetch", "backup_label", out]) == 204  # not a WAL name: ConfigError's 4
    assert main(args + ["wal-fetch", wal_name(1, 10, SEG), out]) == 1  # absent: still 1, quietly


def test_cleanup_never_removes_a_data_object_a_push_just_recorded(tmp_path, pgwal, monkeypatch):
    """A killed push left a data object without its record, long ago; PostgreSQL's retry adopts it (it decodes to
    the file) and writes the record while cleanup, which listed it as an orphan a moment before, removes orphans:
    the record would name a missing object. Cleanup looks again right before it deletes."""
    from datetime import datetime, timezone

    from seawall_pgbackup.repo import walarchive

    cfg = load_config(env=_env(tmp_path, encryption=True))
    name = wal_name(1, 6, SEG)
    path = _write(pgwal, name, _segment_bytes(6))

    def killed(at):
        if at == "wal-push-record":
            raise KeyboardInterrupt

    monkeypatch.setattr(walarchive, "pause", killed)
    with pytest.raises(KeyboardInterrupt):
        WalArchive(cfg).push(path)
    monkeypatch.setattr(walarchive, "pause", lambda at: None)
    folder = os.path.join(cfg.backup_dir, "wal")
    [left] = os.listdir(folder)
    os.utime(os.path.join(folder, left), (0, 0))  # long ago
    cleaning = WalArchive(cfg)
    listed = cleaning.orphans(timedelta(hours=1), now=datetime.now(timezone.utc))
    assert [o.key for o in listed] == ["wal/" + left]
    assert WalArchive(cfg).push(path)["result"] == "pushed"  # the retry, between cleanup's listing and deleting
    monkeypatch.setattr(cleaning, "orphans", lambda grace, now=None: listed)
    assert cleaning.remove_orphans(timedelta(hours=1)) == []
    archive = WalArchive(cfg)
    [segment] = archive.segments()
    assert segment.stored == left and archive.check_data(segment) is None


def test_a_fetch_that_cannot_write_says_so_and_stops_recovery(tmp_path, pgwal):
    """pg_wal full (here: a file size limit, EFBIG from a real short write) is not a damaged archive: the error
    names the file being written, leaves no partial file, and exits above 125 so PostgreSQL stops recovery."""
    import resource
    import subprocess
    import sys

    env = _env(tmp_path)
    name = wal_name(1, 11, SEG)
    WalArchive(load_config(env=env)).push(_write(pgwal, name, _segment_bytes(11)))
    out = tmp_path / "pg_wal_full" / "RECOVERYXLOG"
    out.parent.mkdir()

    def small_files():  # Python ignores SIGXFSZ: a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (SEG // 2, SEG // 2))

    proc = subprocess.run([sys.executable, "-m", "seawall_pgbackup.cli.run", "--backup-dir", env["BACKUP_DIR"],
                           "wal-fetch", name, str(out)], capture_output=True, text=True, preexec_fn=small_files, check=False,
                          env=dict(os.environ, **env))
    assert proc.returncode > 125, proc.stderr
    assert "cannot write %s" % out in proc.stderr and "decoded" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and os.listdir(out.parent) == []
