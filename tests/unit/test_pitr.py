"""Point-in-time restore, the pure parts: recovery targets, recovery settings, restore_command, pg_waldump lines."""

from __future__ import annotations

import importlib.util
import os
from datetime import datetime, timezone

import pytest

from seawall_pgbackup.config.settings import load_config
from seawall_pgbackup.core.errors import ConfigError
from seawall_pgbackup.ops import pitr
from seawall_pgbackup.pg import waldump

COMMIT = ("rmgr: Transaction len (rec/tot):     34/    34, tx:        726, lsn: 0/01759970, prev 0/01759930, "
          "desc: COMMIT 2026-12-06 07:46:53.769916 UTC")
COMMIT_INVAL = ("rmgr: Transaction len (rec/tot):    258/   258, tx:        697, lsn: 0/014918E8, prev 0/01491828, "
                "desc: COMMIT 2026-12-06 07:46:53.580939 UTC; relcache init file inval dbid 1 tsid 1663; inval msgs: "
                "catcache 63 catcache 63")
ABORT = ("rmgr: Transaction len (rec/tot):     34/    34, tx:        727, lsn: 0/017599D8, prev 0/01759998, "
         "desc: ABORT 2026-12-06 07:46:56 UTC")
PREPARED = ("rmgr: Transaction len (rec/tot):     50/    50, tx:          0, lsn: 1/0000A000, prev 1/00009F00, "
            "desc: COMMIT_PREPARED 812: 2026-12-06 07:47:00.000001 UTC")
POINT = ("rmgr: XLOG        len (rec/tot):     98/    98, tx:          0, lsn: 0/01759A00, prev 0/017599D8, "
         "desc: RESTORE_POINT before batch two")
SWITCH = ("rmgr: XLOG        len (rec/tot):     24/    24, tx:          0, lsn: 0/01759A90, prev 0/01759A68, "
          "desc: SWITCH ")
HEAP = ("rmgr: Heap        len (rec/tot):     59/    59, tx:        726, lsn: 0/01759930, prev 0/017598F8, "
        "desc: INSERT off: 2, flags: 0x08, blkref #0: rel 1663/5/16384 blk 0")


def test_waldump_lines_become_the_records_recovery_stops_at():
    commit = waldump.parse_line(COMMIT)
    assert (commit.kind, commit.xid, commit.lsn_text) == ("commit", 726, "0/1759970")
    assert commit.moment == datetime(2026, 12, 6, 7, 46, 53, 769916, tzinfo=timezone.utc)
    assert waldump.parse_line(COMMIT_INVAL).moment.microsecond == 580939
    abort = waldump.parse_line(ABORT)
    assert (abort.kind, abort.xid, abort.moment.second, abort.moment.microsecond) == ("abort", 727, 56, 0)
    prepared = waldump.parse_line(PREPARED)
    assert (prepared.kind, prepared.xid, prepared.lsn) == ("commit", 812, (1 << 32) | 0xA000)
    point = waldump.parse_line(POINT)
    assert (point.kind, point.name, point.lsn_text) == ("restore_point", "before batch two", "0/1759A00")
    for other in (SWITCH, HEAP, "", "pg_waldump: error: error in WAL record at 0/1759A90: invalid record length",
                  "rmgr: Transaction garbage"):
        assert waldump.parse_line(other) is None
    records = waldump.parse_output("\n".join([HEAP, COMMIT_INVAL, COMMIT, ABORT, POINT, SWITCH]))
    assert [r.kind for r in records] == ["commit", "commit", "abort", "restore_point"]


def test_first_after_is_the_first_commit_or_abort_strictly_later():
    records = waldump.parse_output("\n".join([COMMIT_INVAL, COMMIT, POINT, ABORT]))
    moment = datetime(2026, 12, 6, 7, 46, 53, 580939, tzinfo=timezone.utc)
    assert waldump.first_after(records, moment).xid == 726  # equal is not after
    assert waldump.first_after(records, datetime(2026, 12, 6, 7, 46, 55, tzinfo=timezone.utc)).xid == 727
    assert waldump.first_after(records, datetime(2026, 12, 6, 8, 0, tzinfo=timezone.utc)) is None


@pytest.mark.parametrize("kind, value, written", [
    ("time", "2026-12-06T07:46:55Z", "2026-12-06 07:46:55.000000+00"),
    ("time", "2026-12-06 08:46:55.5+01:00", "2026-12-06 07:46:55.500000+00"),
    ("lsn", "0/1759a00", "0/1759A00"),
    ("lsn", " 1A/00000028 ", "1A/28"),
    ("xid", "726", "726"),
    ("xid", "4294968022", "4294968022"),  # epoch 1, xid 726
    ("name", "before batch two", "before batch two"),
    ("name", " padded ", " padded "),  # restore point names are matched exactly
    ("immediate", None, None),
    ("latest", None, None),
])
def test_valid_targets(kind, value, written):
    target = pitr.parse_target(kind, value)
    assert target.kind == kind and target.value == written
    if kind == "xid":
        assert target.xid == 726
    assert target.describe()


def test_a_time_without_offset_is_in_the_configured_zone():
    target = pitr.parse_target("time", "2026-07-01 12:00", "Europe/Berlin")
    assert target.value == "2026-07-01 10:00:00.000000+00"
    assert target.moment == datetime(2026, 7, 1, 10, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("kind, value, words", [
    ("time", "yesterday", "is not valid"),
    ("time", "", "needs a value"),
    ("lsn", "0/XYZ", "is not an LSN"),
    ("lsn", "3000028", "is not an LSN"),
    ("xid", "abc", "not a transaction id"),
    ("xid", "2", "not a transaction id"),
    ("xid", "-5", "not a transaction id"),
    ("name", "x" * 64, "at most 63 bytes"),
    ("name", "   ", "needs a value"),
    ("when", "x", "is not one of"),
])
def test_invalid_targets_are_one_line_config_errors(kind, value, words):
    with pytest.raises(ConfigError) as caught:
        pitr.parse_target(kind, value)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_exactly_one_target():
    assert pitr.target_from() is None
    assert pitr.target_from(lsn="0/3000000").kind == "lsn"
    assert pitr.target_from(latest=True).kind == "latest"
    with pytest.raises(ConfigError, match="one recovery target at a time, not time and name"):
        pitr.target_from(time_="2026-12-06T07:00:00Z", name="x")
    with pytest.raises(ConfigError, match="not lsn and immediate"):
        pitr.target_from(lsn="0/1", immediate=True)


@pytest.mark.parametrize("kind, value, expected", [
    ("time", "2026-12-06T07:46:55Z", [("recovery_target_time", "2026-12-06 07:46:55.000000+00"),
                                      ("recovery_target_timeline", "latest"), ("recovery_target_action", "promote")]),
    ("lsn", "0/3000000", [("recovery_target_lsn", "0/3000000"), ("recovery_target_timeline", "latest"),
                          ("recovery_target_action", "promote")]),
    ("xid", "900", [("recovery_target_xid", "900"), ("recovery_target_timeline", "latest"),
                    ("recovery_target_action", "promote")]),
    ("name", "it's", [("recovery_target_name", "it's"), ("recovery_target_timeline", "latest"),
                      ("recovery_target_action", "promote")]),
    ("immediate", None, [("recovery_target", "immediate"), ("recovery_target_timeline", "current"),
                         ("recovery_target_action", "promote")]),
    ("latest", None, [("recovery_target_timeline", "latest")]),
])
def test_recovery_settings(kind, value, expected):
    settings = pitr.recovery_settings(pitr.parse_target(kind, value), "fetch %f %p")
    assert settings[0] == ("restore_command", "fetch %f %p") and settings[1:] == expected


def test_write_recovery_appends_to_auto_conf_and_signals(tmp_path):
    (tmp_path / "postgresql.auto.conf").write_text("# Do not edit this file manually!\nwork_mem = '8MB'")
    settings = pitr.recovery_settings(pitr.parse_target("name", "it's \\ here"), "run 'x' %f %p")
    pitr.write_recovery(str(tmp_path), settings, "base-x to restore point\n'it's'")
    text = (tmp_path / "postgresql.auto.conf").read_text()
    lines = text.splitlines()
    assert lines[:2] == ["# Do not edit this file manually!", "work_mem = '8MB'"]
    assert lines[2].startswith(pitr.MARK) and "\n" not in lines[2][len(pitr.MARK):]
    assert "restore_command = 'run ''x'' %f %p'" in lines
    assert "recovery_target_name = 'it''s \\\\ here'" in lines
    assert (tmp_path / "recovery.signal").read_bytes() == b""
    assert os.stat(tmp_path / "postgresql.auto.conf").st_mode & 0o077 == 0


def test_restore_command_carries_the_repository_and_no_secret(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith(("BACKUP_", "DATABASE_URL")):
            monkeypatch.delenv(name)
    keyring = tmp_path / "keys 100%"
    cfg = load_config(env={"DATABASE_URL": "postgresql://u:s3cret@h/db", "BACKUP_DIR": str(tmp_path / "b"),
                           "BACKUP_ENCRYPTION": "true", "BACKUP_ENCRYPTION_KEYRING": str(keyring)})
    command = pitr.restore_command(cfg, config_file=str(tmp_path / "c.json"), command=["/usr/bin/seawall-pgbackup"])
    assert command.endswith(" wal-fetch --spool pg_wal/seawall-prefetch %f %p") and "s3cret" not in command
    assert "DATABASE_URL" not in command
    assert "--backup-dir %s" % (tmp_path / "b") in command and "--config %s" % (tmp_path / "c.json") in command
    assert "BACKUP_ENCRYPTION=true" in command
    assert "BACKUP_ENCRYPTION_KEYRING='%s'" % str(keyring).replace("%", "%%") in command  # % doubled
    assert "BACKUP_COMPRESSION" not in command and "BACKUP_ACCEPT_UNSIGNED" not in command  # defaults: not carried
    plain = pitr.restore_command(load_config(env={"BACKUP_DIR": "rel"}), command=["seawall-pgbackup"])
    assert plain == "seawall-pgbackup --backup-dir %s wal-fetch --spool pg_wal/seawall-prefetch %%f %%p" % (
        os.path.abspath("rel"))
    off = load_config(env={"BACKUP_DIR": "rel", "BACKUP_WAL_PREFETCH": "0"})
    assert pitr.restore_command(off, command=["seawall-pgbackup"]) == (
        "BACKUP_WAL_PREFETCH=0 seawall-pgbackup --backup-dir %s wal-fetch %%f %%p" % os.path.abspath("rel"))
    assert pitr.recovery_end_command(off, ["seawall-pgbackup"]) is None


def test_recovery_end_command_stops_the_prefetcher_without_configuration():
    cfg = load_config(env={"BACKUP_DIR": "/b"})
    end = pitr.recovery_end_command(cfg, ["/opt/100% sure/seawall-pgbackup"])
    assert end == "'/opt/100%% sure/seawall-pgbackup' wal-prefetch-stop pg_wal/seawall-prefetch"
    settings = pitr.recovery_settings(pitr.parse_target("latest"), "fetch %f %p", 1, end)
    assert settings[:2] == [("restore_command", "fetch %f %p"), ("recovery_end_command", end)]


def test_host_command_is_this_package():
    words = pitr.host_command()
    assert words[-2:] == ["-m", "seawall_pgbackup.cli.run"] or os.path.basename(words[0]) == pitr.HOST_COMMAND


SYSTEM = "7412345678901234567"


def _physical(kind: str, stamp: int, stop: str, parent=None, tar=True, method="physical"):
    from seawall_pgbackup.model.manifest import Backup  # pylint: disable=import-outside-toplevel
    backup_id = "%s-db-20260101T%02d0000Z" % (kind, stamp)
    files = [{"name": backup_id + ".base.tar.gz", "size": 1, "sha256": "0" * 64, "role": "base"}] if tar else []
    return Backup({"format_version": 1, "id": backup_id, "type": kind, "method": method, "parent": parent,
                   "created_at": "2026-01-01T%02d:00:00.000000Z" % stamp,
                   "finished_at": "2026-01-01T%02d:30:00.000000Z" % stamp, "files": files,
                   "start_lsn": stop, "stop_lsn": stop, "timeline": 1,
                   "server": {"system_identifier": SYSTEM, "major": 15}}, "/nowhere/%s.json" % backup_id)


class _Repo:
    """What chains() reads of a catalog: good backups by kind, and one by id."""

    where = "/nowhere"

    def __init__(self, *backups):
        self.all = list(backups)

    def backups(self, kind=None, database=None):  # pylint: disable=unused-argument
        return [b for b in self.all if kind is None or b.kind == kind]

    def find(self, selector, kind=None):  # pylint: disable=unused-argument
        return next(b for b in self.all if b.id == selector)


def test_chains_end_at_data_and_wal_links_add_none():
    base = _physical("base", 1, "0/2000100")
    native = _physical("incremental", 2, "0/4000100", parent=base.id)
    wal = _physical("incremental", 3, "0/5000060", parent=native.id, tar=False, method="wal")
    wal2 = _physical("incremental", 4, "0/6000060", parent=wal.id, tar=False, method="wal")
    orphan = _physical("incremental", 5, "0/7000100", parent="base-db-20251231T000000Z")
    repo = _Repo(base, native, wal, wal2, orphan)
    assert pitr.is_wal_link(wal) and not pitr.is_wal_link(native) and not pitr.is_wal_link(base)
    found = pitr.chains(repo)
    assert [[b.id for b in chain] for chain in found] == [[base.id], [base.id, native.id]]  # oldest first
    assert [b.id for b in pitr.chains(repo, wal2.id)[0]] == [base.id, native.id]
    with pytest.raises(Exception, match="is a full backup"):
        pitr.chains(_Repo(_physical("full", 1, "0/1")), "full-db-20260101T010000Z")


def test_conf_literals_stay_on_one_line():
    # postgres -C reads these back as the original text (checked against PostgreSQL 15's parser)
    assert pitr.conf_quote("a\nb\t'c' \\ d") == "'a\\nb\\t''c'' \\\\ d'"
    with pytest.raises(ConfigError, match="NUL"):
        pitr.conf_quote("a\0b")


class _Records(pitr._Scanner):  # pylint: disable=protected-access
    """A scanner whose WAL files hold given records (no pg_waldump)."""

    def __init__(self, segments, records):
        super().__init__(None, segments, None, "/nowhere")
        self.by_file = records

    def of(self, segment, following):
        self.read += 1
        return self.by_file.get(segment.wal, [])


def test_a_time_target_is_not_refused_because_a_files_mtime_is_before_its_commits():
    """modified_at is the source file's mtime: a coarse file-system clock, or pg_receivewal writing on a host whose
    clock lags, dates a file before the commits it holds. Skipping by it must never refuse a reachable target."""
    from dataclasses import replace as _replace

    from seawall_pgbackup.repo.walarchive import Segment, wal_name

    size = 16 * 1024 * 1024
    base = _physical("base", 1, "0/2000100")
    late = datetime(2026, 1, 1, 3, 0, 0, 3000, tzinfo=timezone.utc)  # 3 ms after the target
    early = datetime(2026, 1, 1, 2, 59, 59, 999000, tzinfo=timezone.utc)  # the file's mtime: 1 ms before it
    first = Segment(wal=wal_name(1, 2), timeline=1, segno=2, digest="0" * 64, size=size, stored="x", record="y",
                    modified_at=early, archived_at=early, kind="segment")
    segments = [first]
    records = {first.wal: [waldump.WalRecord(0x2000200, "commit", 800, late)]}
    target = pitr.parse_target("time", "2026-01-01T03:00:00Z")
    scanner = _Records(segments, records)
    reach = pitr._reach_from(scanner, segments, [base], target)  # pylint: disable=protected-access
    assert reach.stop is not None and reach.stop.xid == 800
    # a file dated well before the target is still skipped (the scan stays cheap) when a later one decides
    second = _replace(first, wal=wal_name(1, 3), segno=3, modified_at=late)
    records[second.wal] = [waldump.WalRecord(0x3000200, "commit", 801, late)]
    old = _replace(first, modified_at=datetime(2026, 1, 1, 1, 0, tzinfo=timezone.utc))
    scanner = _Records([old, second], {second.wal: records[second.wal]})
    reach = pitr._reach_from(scanner, [old, second], [base], target)  # pylint: disable=protected-access
    # read: the base's own WAL (always, whatever its date: see the next test) and the later file, not the old one
    old_span = _replace(old, segno=1, wal=wal_name(1, 1))
    scanner = _Records([old_span, old, second], {second.wal: records[second.wal]})
    early_base = _physical("base", 1, "0/1000100")
    reach = pitr._reach_from(scanner, [old_span, old, second], [early_base], target)  # pylint: disable=protected-access
    assert reach.stop.xid == 801 and scanner.read == 2


def test_recovery_settings_left_by_an_earlier_recovery_do_not_add_a_second_target(tmp_path):
    """A server restored to a point keeps its recovery settings in postgresql.auto.conf after promotion, and its
    base backups copy that file: an old recovery_target_time beside the new target is FATAL ("multiple recovery
    targets specified"), and with 'latest' (no recovery_target_* written) it would silently stop recovery there."""
    (tmp_path / "postgresql.auto.conf").write_text(
        "work_mem = '8MB'\n%s: base-old to time\nrestore_command = 'old %%f %%p'\n"
        "recovery_target_time = '2026-01-01 00:00:00+00'\n  recovery_target_timeline='latest'\n"
        "recovery_target_action = 'promote'\nrecovery_target_inclusive = off\n"
        "recovery_end_command = 'old wal-prefetch-stop x'\n" % pitr.MARK)
    pitr.write_recovery(str(tmp_path), pitr.recovery_settings(pitr.parse_target("latest"), "new %f %p"), "latest")
    active = [line.split("=")[0].strip() for line in (tmp_path / "postgresql.auto.conf").read_text().splitlines()
              if line.strip() and not line.lstrip().startswith("#")]
    assert active == ["work_mem", "restore_command", "recovery_target_timeline"]


def test_restore_command_is_never_a_module_this_host_cannot_import(monkeypatch):
    """From the Ansible module (sys.argv[0] is its AnsiballZ payload, the engine imported from the collection) on
    a host without seawall-pgbackup on PATH, 'python -m seawall_pgbackup.cli.run wal-fetch' fails at recovery with
    exit 1, which PostgreSQL takes for the end of the archive: a 'latest' recovery would silently stop at the backup."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(pitr.sys, "argv", ["/tmp/ansible_x/AnsiballZ_pg_backup_restore.py"])
    monkeypatch.setattr(pitr.shutil, "which", lambda name: None)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "seawall_pgbackup" else real(name, *a))
    with pytest.raises(ConfigError, match="seawall-pgbackup"):
        pitr.host_command()


def test_python_m_carries_the_pythonpath_this_run_found_the_package_on(monkeypatch):
    """Run as ``python -m seawall_pgbackup.cli.run`` with PYTHONPATH (a checkout, a venv the server's user cannot
    use): the server has none of our environment, so without it wal-fetch would exit 1 ("not archived") at every file."""
    monkeypatch.setattr(pitr.sys.modules["__main__"], "__spec__",
                        importlib.util.find_spec(pitr.RUN_MODULE), raising=False)  # as run by python -m
    monkeypatch.setattr(pitr.shutil, "which", lambda name: None)
    monkeypatch.setenv("PYTHONPATH", "/srv/my checkout:/opt/libs")
    assert pitr.host_command()[:2] == ["env", "PYTHONPATH=/srv/my checkout:/opt/libs"]
    command = pitr.restore_command(load_config(env={"BACKUP_DIR": "/b"}))
    assert command.startswith("env 'PYTHONPATH=/srv/my checkout:/opt/libs' ")
    monkeypatch.delenv("PYTHONPATH")
    assert pitr.host_command()[1:] == ["-m", "seawall_pgbackup.cli.run"]


def test_the_timeline_recovered_is_the_one_the_archive_was_checked_on():
    """recovery_target_timeline = 'latest' makes PostgreSQL take the highest timeline whose history file is
    archived, whether or not the backup lies on its history: a server restored earlier to a point before this
    backup and promoted (timeline 2, archiving into the same repository) would make this restore FATAL ("not a
    child of this server's history") after the check said yes. The timeline checked is written instead."""
    from seawall_pgbackup.repo.walarchive import Segment, format_lsn, wal_name

    size = 16 * 1024 * 1024
    now = datetime(2026, 1, 1, 5, tzinfo=timezone.utc)

    def segment(tli, segno, kind="segment", history=()):
        name = "%08X.history" % tli if kind == "history" else wal_name(tli, segno)
        return Segment(wal=name, timeline=tli, segno=None if kind == "history" else segno, digest="0" * 64,
                       size=size, stored="x", record="y", modified_at=now, archived_at=now, kind=kind,
                       history=tuple(history))

    base = _physical("base", 1, "0/2000100")
    older_branch = [segment(1, 2), segment(1, 3), segment(2, 1), segment(2, 0, "history", [(1, format_lsn(size))])]
    reach = pitr._reach_from(_Records(older_branch, {}), older_branch, [base],  # pylint: disable=protected-access
                             pitr.parse_target("latest"))
    assert reach.target_timeline == 1
    settings = dict(pitr.recovery_settings(pitr.parse_target("latest"), "fetch %f %p", reach.target_timeline))
    assert settings["recovery_target_timeline"] == "1"
    later_branch = [segment(1, 2), segment(1, 3), segment(2, 3), segment(2, 0, "history", [(1, format_lsn(3 * size))])]
    reach = pitr._reach_from(_Records(later_branch, {}), later_branch, [base],  # pylint: disable=protected-access
                             pitr.parse_target("latest"))
    assert reach.target_timeline == 2 and reach.timelines == [1, 2]
    immediate = dict(pitr.recovery_settings(pitr.parse_target("immediate"), "fetch %f %p", 2))
    assert immediate["recovery_target_timeline"] == "current"


def test_a_base_that_ran_past_a_time_target_by_the_servers_clock_is_not_chosen():
    """finished_at is the backup host's clock: one that lags the server's dates a base before a target the base
    actually ran past. The WAL decides: a commit after the target before the base's consistent point refuses that
    base (PostgreSQL would not start from it), and the next older one is taken."""
    from seawall_pgbackup.repo.walarchive import Segment, wal_name

    size = 16 * 1024 * 1024
    moment = datetime(2026, 1, 1, 3, 0, 0, tzinfo=timezone.utc)
    later = datetime(2026, 1, 1, 3, 0, 1, tzinfo=timezone.utc)

    def segment(segno):
        return Segment(wal=wal_name(1, segno), timeline=1, segno=segno, digest="0" * 64, size=size, stored="x",
                       record="y", modified_at=later, archived_at=later, kind="segment")

    older = _physical("base", 1, "0/2000100")
    newer = _physical("base", 2, "0/4000100")
    newer.manifest.start_lsn = "0/3000028"
    segments = [segment(n) for n in (2, 3, 4, 5)]
    # the commit after the target sits in the newer base's own WAL, before its stop LSN
    records = {segments[1].wal: [waldump.WalRecord(0x3000200, "commit", 900, later)],
               segments[3].wal: [waldump.WalRecord(0x5000200, "commit", 901, later)]}
    target = pitr.parse_target("time", "2026-01-01T03:00:00Z")
    with pytest.raises(pitr.RestoreError, match="before the backup's consistent point 0/4000100"):
        pitr._reach_from(_Records(segments, records), segments, [newer], target)  # pylint: disable=protected-access
    reach = pitr._reach_any(_Records(segments, records), segments,  # pylint: disable=protected-access
                            [[older], [newer]], target)
    assert reach.chain == [older] and reach.stop.xid == 900
    # the same commit after the stop LSN: the newer base is fine
    records = {segments[3].wal: [waldump.WalRecord(0x5000200, "commit", 901, later)]}
    reach = pitr._reach_any(_Records(segments, records), segments,  # pylint: disable=protected-access
                            [[older], [newer]], target)
    assert reach.chain == [newer] and reach.stop.xid == 901
