# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_waldump read for what recovery targets need: commit and abort times and xids, named restore points.

A point-in-time restore is refused before anything is written when the archive cannot reach its target; the
records that decide it (PostgreSQL stops on a COMMIT/ABORT or a RESTORE_POINT record) are read here, from WAL
files fetched and checked by the archive, with pg_waldump of tools at least the server's major. Only the
Transaction and XLOG resource managers are dumped; times are printed in UTC (TZ=UTC in pg_waldump's environment).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import List, Optional, Sequence, Tuple

from .binaries import ClientTools
from .runner import first_error, run

# "rmgr: Transaction len (rec/tot): 34/ 34, tx: 727, lsn: 0/017599D8, prev 0/01759998, desc: ABORT 2026-... UTC"
_LINE = re.compile(r"^rmgr: (?P<rmgr>\S+)\s+len \(rec/tot\):\s*\d+/\s*\d+, tx:\s*(?P<tx>\d+), "
                   r"lsn: (?P<lsn>[0-9A-F]+/[0-9A-F]+), prev [0-9A-F]+/[0-9A-F]+, desc: (?P<desc>.*)$")
# COMMIT 2026-12-06 07:46:53.580939 UTC; ...   COMMIT_PREPARED 5: 2026-...   ABORT ...
_XACT = re.compile(r"^(?P<what>COMMIT|ABORT)(?:_PREPARED (?P<prepared>\d+):)? "
                   r"(?P<when>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,6})?) (?P<zone>UTC|GMT|\+00|Z)\b")
_RESTORE_POINT = re.compile(r"^RESTORE_POINT (?P<name>.*)$")


@dataclass(frozen=True)
class WalRecord:
    """One record recovery can stop at: ``kind`` commit, abort or restore_point."""

    lsn: int
    kind: str
    xid: int = 0
    moment: Optional[datetime] = None  # commit/abort time (UTC)
    name: Optional[str] = None  # restore point name

    @property
    def lsn_text(self) -> str:
        return format_lsn(self.lsn)


def format_lsn(value: int) -> str:
    return "%X/%X" % (value >> 32, value & 0xFFFFFFFF)


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def parse_line(line: str, every: bool = False) -> Optional[WalRecord]:
    """The record of one pg_waldump output line, or None for records recovery does not stop at (``every``:
    those too, as kind ``other``)."""
    match = _LINE.match(line.rstrip("\r\n"))
    if not match:
        return None
    rmgr, desc = match.group("rmgr"), match.group("desc").rstrip()
    lsn, tx = _lsn(match.group("lsn")), int(match.group("tx"))
    other = WalRecord(lsn, "other", tx) if every else None
    if rmgr == "Transaction":
        xact = _XACT.match(desc)
        if not xact:
            return other
        moment = datetime.strptime(xact.group("when"), "%Y-%m-%d %H:%M:%S.%f" if "." in xact.group("when")
                                   else "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
        xid = int(xact.group("prepared")) if xact.group("prepared") else tx  # a prepared one ends another xid
        return WalRecord(lsn, xact.group("what").lower(), xid, moment)
    if rmgr == "XLOG":
        point = _RESTORE_POINT.match(desc)
        if point:
            return WalRecord(lsn, "restore_point", tx, name=point.group("name"))
    return other


def parse_output(text: str, every: bool = False) -> List[WalRecord]:
    return [record for record in (parse_line(line, every) for line in text.splitlines()) if record is not None]


def dump(tools: ClientTools, directory: str, first: str, last: Optional[str] = None,
         start_lsn: Optional[int] = None, every: bool = False, limit: Optional[int] = None,
         end_lsn: Optional[int] = None) -> Tuple[List[WalRecord], Optional[str]]:
    """The records of the WAL files ``first``..``last`` (names of files in ``directory``, one timeline), from
    ``start_lsn`` (the first record at or after it) and before ``end_lsn`` when given; ``every``: all records,
    else only those recovery stops at (Transaction and XLOG resource managers); at most ``limit`` records.
    Reading ends at the first record that is not valid (the end of the WAL written, or of the files here): its
    reason is returned beside what was read before it, None when the range was read whole.
    """
    cmd = [tools.path("pg_waldump"), "--path=" + directory]
    if not every:
        cmd += ["--rmgr=Transaction", "--rmgr=XLOG"]
    if start_lsn is not None:
        cmd.append("--start=" + format_lsn(start_lsn))
    if end_lsn is not None:
        cmd.append("--end=" + format_lsn(end_lsn))
    if limit is not None:
        cmd.append("--limit=%d" % limit)
    cmd += [first] + ([last] if last and last != first else [])
    env = dict(os.environ, TZ="UTC", LC_ALL="C")
    out = run(cmd, "pg_waldump", env=env, check=False)
    text = out.stdout.decode("utf-8", "replace") if isinstance(out.stdout, bytes) else str(out.stdout or "")
    records = parse_output(text, every)
    return records, (first_error(out.stderr) if out.returncode != 0 else None)


def first_after(records: Sequence[WalRecord], moment: datetime) -> Optional[WalRecord]:
    """The first commit or abort strictly after ``moment``: recovery to a time stops there."""
    for record in records:
        if record.kind in ("commit", "abort") and record.moment is not None and record.moment > moment:
            return record
    return None
