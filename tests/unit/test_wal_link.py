"""A WAL-method incremental's parent must be an ancestor of the server's current timeline at its stop LSN."""

from __future__ import annotations

from seawall_pgbackup.ops.incremental import timeline_problem
from seawall_pgbackup.repo.walarchive import Segment, format_lsn, wal_name

SEG = 16 * 1024 * 1024


def _history(tli: int, entries) -> Segment:
    from seawall_pgbackup.core.clock import utc_now
    now = utc_now()
    name = "%08X.history" % tli
    return Segment(wal=name, timeline=tli, segno=None, digest="0" * 64, size=40, stored=name + "-0.gz",
                   record=name + "-0.json", modified_at=now, archived_at=now, kind="history",
                   history=tuple(entries))


def _segment(tli: int, segno: int) -> Segment:
    from seawall_pgbackup.core.clock import utc_now
    now = utc_now()
    name = wal_name(tli, segno, SEG)
    return Segment(wal=name, timeline=tli, segno=segno, digest="0" * 64, size=SEG, stored=name + "-0.gz",
                   record=name + "-0.json", modified_at=now, archived_at=now, kind="segment")


def test_same_timeline_or_a_branch_after_the_parent_is_a_link():
    assert timeline_problem([], 1, format_lsn(5 * SEG), 1) is None
    later = [_history(2, [(1, format_lsn(7 * SEG + 100))])]
    assert timeline_problem(later, 1, format_lsn(5 * SEG), 2) is None
    deeper = [_history(3, [(1, format_lsn(6 * SEG)), (2, format_lsn(9 * SEG))])]
    assert timeline_problem(deeper, 1, format_lsn(5 * SEG), 3) is None
    assert timeline_problem(deeper, 2, format_lsn(8 * SEG), 3) is None


def test_a_server_restored_to_before_the_parent_is_not_its_descendant():
    """The cluster was restored to a point before the parent's end and promoted (timeline 2, same system
    identifier), then ran past the parent's stop LSN: timeline 1's WAL after the parent (archived by the old
    server) is not this server's history, and a link over it would restore the abandoned branch."""
    archive = [_segment(1, n) for n in range(5, 12)] + [_history(2, [(1, format_lsn(3 * SEG))])]
    problem = timeline_problem(archive, 1, format_lsn(5 * SEG), 2)
    assert problem and "timeline 2" in problem and "take a base backup" in problem
    # no history file for the server's timeline archived: its ancestry is unknown, never assumed
    assert "take a base backup" in timeline_problem([], 1, format_lsn(5 * SEG), 2)
    # a lower timeline than the parent's cannot descend from it
    assert timeline_problem([], 2, format_lsn(5 * SEG), 1)
