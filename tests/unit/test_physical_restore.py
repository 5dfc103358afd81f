"""ops/physical without a server: the data directory rules (absent or empty only), the backup_label idempotence
record, and the chain of a base backup and its incrementals."""

from __future__ import annotations

import os

import pytest

from seawall_pgbackup.core.errors import RestoreError
from seawall_pgbackup.model.manifest import Backup
from seawall_pgbackup.ops.physical import _empty_out, check_empty_target, check_chain, restored_label

SYSTEM = "7412345678901234567"


def _backup(kind: str, stamp: str, parent=None, system=SYSTEM) -> Backup:
    backup_id = "%s-db-2026010%sT000000Z" % (kind, stamp)
    return Backup({"format_version": 1, "id": backup_id, "type": kind, "created_at": "2026-01-0%sT00:00:00.000000Z"
                   % stamp, "files": [], "parent": parent, "server": {"system_identifier": system}},
                  "/nowhere/%s.json" % backup_id)


def test_only_an_absent_or_empty_directory_is_a_target(tmp_path):
    assert check_empty_target(str(tmp_path / "new")) is False
    (tmp_path / "empty").mkdir()
    assert check_empty_target(str(tmp_path / "empty")) is True
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / ".hidden").write_text("x")
    for path, why in ((tmp_path / "busy", "is not empty"), (tmp_path / "no" / "parent", "parent directory"),
                      (tmp_path / "busy" / ".hidden", "is not a directory")):
        with pytest.raises(RestoreError) as err:
            check_empty_target(str(path))
        assert why in str(err.value)
    os.symlink(tmp_path / "empty", tmp_path / "link")
    with pytest.raises(RestoreError):
        check_empty_target(str(tmp_path / "link"))


def test_a_failed_restore_leaves_the_directory_as_it_was(tmp_path):
    made = tmp_path / "made"
    (made / "base" / "1").mkdir(parents=True)
    _empty_out(str(made), existed=False)
    assert not made.exists()
    given = tmp_path / "given"
    (given / "global").mkdir(parents=True)
    (given / "PG_VERSION").write_text("18\n")
    _empty_out(str(given), existed=True)
    assert given.is_dir() and os.listdir(given) == []


def test_the_backup_label_names_the_restored_backup(tmp_path):
    assert restored_label(str(tmp_path)) is None
    (tmp_path / "backup_label.old").write_text("START WAL LOCATION: 0/2000028\nLABEL: base-db-20260101T000000Z\n")
    assert restored_label(str(tmp_path)) == "base-db-20260101T000000Z"  # after the server started
    (tmp_path / "backup_label").write_text("LABEL: incremental-db-20260102T000000Z\nSTART TIMELINE: 1\n")
    assert restored_label(str(tmp_path)) == "incremental-db-20260102T000000Z"


def test_a_chain_is_a_base_then_each_incremental_on_the_one_before():
    base = _backup("base", "1")
    first = _backup("incremental", "2", base.id)
    second = _backup("incremental", "3", first.id)
    check_chain([base, first, second])
    check_chain([base])
    for chain, why in (([first, second], "starts with a base"),
                       ([base, second], "broken at %s" % second.id),
                       ([base, first, _backup("incremental", "4", base.id)], "broken at"),
                       ([base, _backup("incremental", "2", base.id, system="1")], "another cluster"),
                       ([], "starts with a base")):
        with pytest.raises(RestoreError) as err:
            check_chain(chain)
        assert why in str(err.value)
