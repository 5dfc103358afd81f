# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The retention planner: a pure function from (catalog, policy, now) to keep/delete with reasons.

Slots work like borg's and restic's ``--keep-*``: for each granularity with a count N, the good
backups of a (type, database) are walked newest first; every distinct period (hour, day, ISO week,
month, year in the configured time zone) is one slot, up to N slots; the backup kept for a slot is its
newest verified one, else its newest. Granularities count independently: one backup may fill a
daily and a weekly slot. Then ``keep_last`` (the N newest good backups) and ``min_keep`` (at least N
good backups, newest first) apply.

Rules that protect data, whatever the policy says:

* the newest good backup of each (type, database) is kept;
* a kept backup's parent chain is kept (an incremental never loses its base), and the newest base or
  incremental whose whole chain is present and good is kept (the last chain that restores);
* the WAL archive keeps exactly what the kept physical backups need (``plan_wal``): from the oldest kept
  one's first segment on, on its timeline and later ones, plus every history file;
* when the newest backup of a (type, database) is not good, or the newest good one is older than its
  schedule allows (the runs stopped), nothing of that (type, database) is deleted, and every decision
  says why;
* a kind without a policy keeps everything;
* a backup dated more than ``FUTURE_TOLERANCE`` after ``now`` (a clock that ran ahead) is kept but
  counted nowhere: it is never the newest, fills no slot and pushes no present backup out;
* a backup whose files are missing or of the wrong size (``damaged``: the catalog's stat at planning
  time, no re-hash) is not good: it is never the newest good one, and when it is the newest backup,
  nothing of its (type, database) is deleted.

Nothing here touches the file system: ``ops/cleanup.py`` applies a plan under the repository lock.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from ..config.settings import PHYSICAL_KINDS
from ..core.clock import iso, is_future
from ..core.cron import Cron
from ..core.errors import ConfigError

try:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
except ImportError:  # pragma: no cover - Python < 3.9 is not supported; keep the import error readable
    ZoneInfo = None  # type: ignore[assignment,misc]
    ZoneInfoNotFoundError = KeyError  # type: ignore[assignment,misc]

SLOT_GRANULARITIES = ("hourly", "daily", "weekly", "monthly", "yearly")
POLICY_KEYS = SLOT_GRANULARITIES + ("keep_last", "min_keep")
SCHEDULE_MARGIN = timedelta(hours=2)  # a run may start late or take long before the "runs stopped" rule applies
KEEP = "keep"
DELETE = "delete"


class BackupRecord(NamedTuple):
    """What the planner needs of a backup (a ``catalog.Backup`` is converted with ``record_of``)."""

    id: str
    type: str
    database: str
    created_at: datetime
    good: bool = True
    verified: bool = False       # the last verification succeeded
    failed_verification: bool = False
    parent: Optional[str] = None
    status: str = "ok"
    damaged: Optional[str] = None  # why its files are not all present with the recorded sizes


def record_of(backup: Any) -> BackupRecord:
    """A ``BackupRecord`` from a ``catalog.Backup`` (or anything with a manifest dict); records pass through."""
    if isinstance(backup, BackupRecord):
        return backup
    manifest = backup.manifest
    verification = manifest.verification
    status = manifest.status or "unknown"
    failed = verification is not None and verification.ok is False
    return BackupRecord(
        id=manifest.id,
        type=manifest.kind,
        database=manifest.database,
        created_at=manifest.created_at,
        good=status == "ok" and not failed,
        verified=verification is not None and verification.ok is True,
        failed_verification=failed,
        parent=manifest.parent or None,
        status=status,
    )


class Decision(object):
    """Keep or delete one backup, and why."""

    __slots__ = ("record", "action", "reasons")

    def __init__(self, record: BackupRecord) -> None:
        self.record = record
        self.action = DELETE
        self.reasons: List[str] = []

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def keep(self) -> bool:
        return self.action == KEEP

    def keep_for(self, reason: str) -> None:
        self.action = KEEP
        if reason not in self.reasons:
            self.reasons.append(reason)

    def as_dict(self) -> Dict[str, Any]:
        record = self.record
        return {
            "id": record.id,
            "type": record.type,
            "database": record.database,
            "created_at": iso(record.created_at),
            "action": self.action,
            "reasons": list(self.reasons),
            "good": record.good,
            "verified": record.verified,
            "parent": record.parent,
        }


class RetentionPlan(object):
    """One decision per backup, oldest first, plus a note per (type, database) where nothing is deleted."""

    def __init__(self, decisions: List[Decision], timezone_name: str, now: datetime,
                 notes: Optional[Dict[str, str]] = None) -> None:
        self.decisions = decisions
        self.timezone = timezone_name
        self.now = now
        self.notes = notes or {}

    @property
    def keep(self) -> List[str]:
        return [d.id for d in self.decisions if d.keep]

    @property
    def delete(self) -> List[str]:
        return [d.id for d in self.decisions if not d.keep]

    def decision(self, backup_id: str) -> Decision:
        for decision in self.decisions:
            if decision.id == backup_id:
                return decision
        raise KeyError(backup_id)

    def as_dicts(self) -> List[Dict[str, Any]]:
        return [d.as_dict() for d in self.decisions]


# ----------------------------------------------------------------------------- inputs

def time_zone(name: Optional[str]):
    """A tzinfo for an IANA name (``UTC``, ``Europe/Berlin``); ConfigError names a wrong one."""
    name = (name or "UTC").strip()
    if name.upper() == "UTC":
        return timezone.utc
    if ZoneInfo is None:
        raise ConfigError("timezone %r needs Python 3.9 or later (zoneinfo); use UTC" % name)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError("timezone %r is not valid: use an IANA name such as UTC or Europe/Berlin "
                          "(on Windows, install the tzdata Python package)" % name) from None


def normalize_policy(kind: str, policy: Optional[Mapping[str, Any]]) -> Dict[str, int]:
    """Validated counts of a policy; keys with a count of 0 are dropped."""
    counts: Dict[str, int] = {}
    for key, value in (policy or {}).items():
        if key not in POLICY_KEYS:
            raise ConfigError("retention.%s.%s is not valid: use one of %s" % (kind, key, ", ".join(POLICY_KEYS)))
        try:
            if isinstance(value, bool):
                raise ValueError(value)
            number = int(str(value).strip())
        except ValueError:
            number = -1
        if number < 0:
            raise ConfigError("retention.%s.%s=%r is not valid: use a whole number >= 0" % (kind, key, value))
        if number > 0:
            counts[key] = number
    return counts


@functools.lru_cache(maxsize=64)
def schedule_interval(expression: str) -> timedelta:
    """The longest gap between two runs of a cron schedule (cached: it walks two months minute by minute)."""
    return Cron(expression).longest_gap()


def human(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 3600:
        return "%dm" % (seconds // 60)
    if seconds < 172800:
        return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60)
    return "%dd%02dh" % (seconds // 86400, seconds % 86400 // 3600)


# ----------------------------------------------------------------------------- periods

def _hour(local: datetime) -> str:
    return "%04d-%02d-%02dT%02d" % (local.year, local.month, local.day, local.hour)


def _day(local: datetime) -> str:
    return "%04d-%02d-%02d" % (local.year, local.month, local.day)


def _week(local: datetime) -> str:
    year, week = local.isocalendar()[:2]
    return "%04d-W%02d" % (year, week)


def _month(local: datetime) -> str:
    return "%04d-%02d" % (local.year, local.month)


def _year(local: datetime) -> str:
    return "%04d" % local.year


PERIODS: Dict[str, Callable[[datetime], str]] = {
    "hourly": _hour, "daily": _day, "weekly": _week, "monthly": _month, "yearly": _year,
}


def period_label(granularity: str, moment: datetime, tz: Any = timezone.utc) -> str:
    """The slot a moment falls in, e.g. ``period_label("weekly", t, ZoneInfo("Europe/Berlin")) == "2026-W47"``."""
    return PERIODS[granularity](moment.astimezone(tz))


# ----------------------------------------------------------------------------- the planner

def _sort_key(record: BackupRecord) -> Tuple[Any, ...]:
    # Total over what a manifest may hold, so the plan does not depend on the listing's order (two manifests
    # with one id and one date decide the same way whichever is read first).
    return (record.created_at, record.id, record.type, record.database, not record.good, record.status,
            record.parent or "", record.damaged or "", record.verified, record.failed_verification)


def _not_good_reason(record: BackupRecord) -> str:
    if record.damaged:
        return "files not intact: %s (not good)" % record.damaged
    if record.failed_verification:
        return "failed verification"
    return "status %s (not good)" % record.status


def _plan_group(kind: str, records: List[BackupRecord], decisions: Mapping[str, Decision], policy: Dict[str, int],
                tz: Any, now: datetime, schedule: Optional[str]) -> Optional[str]:
    """Decide for one (type, database), oldest first in ``records``; returns a note when nothing may be deleted."""
    if not policy:
        reason = "no retention policy for %s (kept)" % kind
        for record in records:
            decisions[record.id].keep_for(reason)
        return reason

    # A backup dated in the future is kept and left out of everything below: counted, it would be
    # "newest" for ever and push the present backups out of their slots.
    future = [r for r in records if is_future(r.created_at, now)]
    for record in future:
        decisions[record.id].keep_for("dated %s ahead of now (clock skew?): kept, not counted"
                                      % human(record.created_at - now))
    records = [r for r in records if not is_future(r.created_at, now)]
    if not records:
        return None
    good = [r for r in records if r.good and not r.damaged]  # oldest first
    for record in records:
        if not record.good or record.damaged:
            decisions[record.id].reasons.append(_not_good_reason(record))

    newest = records[-1]
    freeze = None
    if not newest.good or newest.damaged:
        freeze = "newest %s is not good: nothing of this kind is deleted" % kind
    elif schedule:
        interval = schedule_interval(schedule)
        age = now - newest.created_at
        if age > interval + SCHEDULE_MARGIN:
            freeze = ("newest good %s is %s old, its schedule '%s' runs every %s: backups stopped, "
                      "nothing of this kind is deleted" % (kind, human(age), schedule, human(interval)))

    if good:
        newest_first = good[::-1]
        decisions[newest_first[0].id].keep_for("newest good %s" % kind)
        locals_ = [r.created_at.astimezone(tz) for r in newest_first]
        for granularity in SLOT_GRANULARITIES:
            count = policy.get(granularity, 0)
            if count:
                _fill_slots(granularity, count, newest_first, locals_, decisions)
        keep_last = policy.get("keep_last", 0)
        for record in newest_first[:keep_last]:
            decisions[record.id].keep_for("keep_last %d" % keep_last)
        min_keep = policy.get("min_keep", 0)
        kept = sum(1 for r in newest_first if decisions[r.id].keep)
        for record in newest_first:
            if kept >= min_keep:
                break
            if not decisions[record.id].keep:
                decisions[record.id].keep_for("min_keep %d" % min_keep)
                kept += 1
        for record in good:
            if not decisions[record.id].keep:
                decisions[record.id].reasons.append("expired")

    if freeze:
        for record in records:
            decision = decisions[record.id]
            decision.action = KEEP
            decision.reasons = [freeze] + [r for r in decision.reasons if r != "expired"]
    return freeze


def _fill_slots(granularity: str, count: int, newest_first: Sequence[BackupRecord], locals_: Sequence[datetime],
                decisions: Mapping[str, Decision]) -> None:
    label_of = PERIODS[granularity]
    index, total = 0, len(newest_first)
    slots = 0
    while index < total and slots < count:
        label = label_of(locals_[index])
        chosen = None
        # The records of this period follow each other (periods are monotonic in time).
        while index < total and label_of(locals_[index]) == label:
            if chosen is None or (newest_first[index].verified and not chosen.verified):
                chosen = newest_first[index]
            index += 1
        decisions[chosen.id].keep_for("%s slot %s" % (granularity, label))
        slots += 1


def plan_retention(backups: Iterable[Any], policies: Mapping[str, Optional[Mapping[str, Any]]], now: datetime,
                   tz: Optional[str] = "UTC", schedules: Optional[Mapping[str, Optional[str]]] = None,
                   damaged: Optional[Mapping[str, str]] = None) -> RetentionPlan:
    """Keep or delete every backup in ``backups`` (``catalog.Backup`` objects or ``BackupRecord``s, bad ones included).

    ``policies`` maps a kind to its counts (``{"daily": 7, "weekly": 4}``; a missing or empty one keeps
    everything of that kind); ``now`` is an aware datetime; ``tz`` an IANA time zone name for the slot
    boundaries; ``schedules`` maps a kind to its cron schedule (the "backups stopped" rule; None: no check);
    ``damaged`` maps the id of a backup whose files are missing or of the wrong size to why (not good).
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    zone = time_zone(tz)
    records = sorted((record_of(b) for b in backups), key=_sort_key)
    if damaged:
        records = [r._replace(damaged=damaged[r.id]) if r.id in damaged and not r.damaged else r for r in records]
    decisions: Dict[str, Decision] = {}
    ordered: List[Decision] = []
    groups: Dict[Tuple[str, str], List[BackupRecord]] = {}
    copies: Dict[str, int] = {}
    parents: Dict[str, List[str]] = {}  # every parent any manifest of an id names
    for record in records:
        copies[record.id] = copies.get(record.id, 0) + 1
        if record.parent and record.parent not in parents.setdefault(record.id, []):
            parents[record.id].append(record.parent)
        if record.id in decisions:
            continue  # one decision per id (a copy of a manifest under another kind directory is not a second backup)
        decision = Decision(record)
        decisions[record.id] = decision
        ordered.append(decision)
        groups.setdefault((record.type, record.database), []).append(record)

    normalized = {kind: normalize_policy(kind, policy) for kind, policy in (policies or {}).items()}
    notes: Dict[str, str] = {}
    for (kind, database), members in groups.items():
        note = _plan_group(kind, members, decisions, normalized.get(kind, {}), zone, now,
                           (schedules or {}).get(kind))
        if note:
            notes["%s/%s" % (kind, database)] = note

    for backup_id, count in copies.items():
        if count > 1:  # which manifest is the real one is unknown: deleting by either could lose the other's files
            decisions[backup_id].reasons = [r for r in decisions[backup_id].reasons if r != "expired"]
            decisions[backup_id].keep_for("id named by %d manifests: kept" % count)
    _keep_newest_restorable(ordered, decisions, parents, now)
    _keep_parents(ordered, decisions, parents)
    return RetentionPlan(ordered, str(tz or "UTC"), now, notes)


def _keep_parents(ordered: Sequence[Decision], decisions: Mapping[str, Decision],
                  parents: Mapping[str, List[str]]) -> None:
    """Keep the whole parent chain of every kept backup (``parents``: of every manifest of an id)."""
    pending = [d for d in reversed(ordered) if d.keep and parents.get(d.id)]
    while pending:
        child = pending.pop()
        for parent_id in parents.get(child.id, []):
            parent = decisions.get(parent_id)
            if parent is None:
                continue  # the parent is not in the catalog: nothing to protect here
            was_kept = parent.keep
            if not was_kept:
                parent.reasons = [r for r in parent.reasons if r != "expired"]
            parent.keep_for("parent of %s" % child.id)
            if not was_kept and parents.get(parent.id):
                pending.append(parent)


# ----------------------------------------------------------------------------- physical chains

def _keep_newest_restorable(ordered: Sequence[Decision], decisions: Mapping[str, Decision],
                            parents: Mapping[str, List[str]], now: datetime) -> None:
    """Per database, keep the newest base/incremental whose whole chain is present and good, back to a base:
    when the newest links are bad or broken, the last chain that restores is never deleted."""
    def restorable(decision: Decision) -> bool:
        seen = set()
        current: Optional[Decision] = decision
        while current is not None:
            record = current.record
            if not record.good or record.damaged or record.id in seen or is_future(record.created_at, now):
                return False
            seen.add(record.id)
            named = parents.get(record.id, [])
            if not named:
                return record.type == "base"
            if len(named) > 1:
                return False
            current = decisions.get(named[0])
        return False

    newest: Dict[str, Decision] = {}
    for decision in ordered:  # oldest first: the last one seen per database is the newest
        if decision.record.type in PHYSICAL_KINDS and restorable(decision):
            newest[decision.record.database] = decision
    for decision in newest.values():
        decision.reasons = [r for r in decision.reasons if r != "expired"]
        decision.keep_for("newest restorable chain")


# ----------------------------------------------------------------------------- the WAL archive

class WalFile(NamedTuple):
    """An archived WAL file as the planner sees it (``repo/walarchive.Segment`` has these fields)."""

    wal: str
    timeline: int
    segno: Optional[int]
    kind: str = "segment"  # segment | partial | history | backup


class WalNeed(NamedTuple):
    """A kept physical backup's first WAL segment: it (and point-in-time recovery from it) needs the WAL of its
    timeline and of every later one from there on."""

    backup_id: str
    timeline: int
    segno: int


class WalPlan(object):
    """Keep or delete each archived WAL file; ``note`` says why nothing is deleted when that is so."""

    def __init__(self, keep: List[Any], delete: List[Any], needs: Sequence[WalNeed], note: Optional[str] = None,
                 segment_size: int = 16 * 1024 * 1024) -> None:
        self.keep = keep
        self.delete = delete
        self.needs = list(needs)
        self.note = note
        self.segment_size = segment_size

    def ranges(self) -> List[str]:
        """The deleted files as contiguous runs per timeline (``timeline 1: A..B (7 files)``), not every name."""
        runs: List[List[Any]] = []
        last_at: Optional[int] = None
        for item in sorted(self.delete, key=lambda f: (f.timeline, _position(f, self.segment_size), f.wal)):
            at = wal_position(item, self.segment_size)
            last = runs[-1][-1] if runs else None
            if (last is not None and last.timeline == item.timeline and last_at is not None and at is not None
                    and at - last_at <= 1):
                runs[-1].append(item)
            else:
                runs.append([item])
            last_at = at
        return ["timeline %d: %s..%s (%d files)" % (run[0].timeline, run[0].wal, run[-1].wal, len(run))
                if len(run) > 1 else "timeline %d: %s" % (run[0].timeline, run[0].wal) for run in runs]

    def kept_from(self) -> Dict[str, str]:
        """Per timeline, the first segment kept because a kept backup needs it."""
        first: Dict[int, WalFile] = {}
        for item in self.keep:
            if item.kind == "segment" and item.segno is not None:
                if item.timeline not in first or item.segno < (first[item.timeline].segno or 0):
                    first[item.timeline] = item
        return {str(t): f.wal for t, f in sorted(first.items())}

    def as_dict(self) -> Dict[str, Any]:
        return {"files": len(self.keep) + len(self.delete), "keep": len(self.keep), "delete": len(self.delete),
                "ranges": self.ranges(), "kept_from": self.kept_from(), "note": self.note,
                "needed_by": sorted({n.backup_id for n in self.needs})}


def wal_position(item: Any, segment_size: int) -> Optional[int]:
    """The segment number of an archived file: its own, or for a backup history file
    (``<segment>.<offset>.backup``) the segment its name starts with; None for a history file."""
    if item.segno is not None:
        return item.segno
    if item.kind == "backup" and len(item.wal) > 24:
        try:
            return int(item.wal[8:16], 16) * (0x100000000 // segment_size) + int(item.wal[16:24], 16)
        except ValueError:
            return None
    return None


def _position(item: Any, segment_size: int) -> int:
    at = wal_position(item, segment_size)
    return -1 if at is None else at


def wal_needed(item: Any, needs: Sequence[WalNeed], segment_size: int = 16 * 1024 * 1024) -> bool:
    """Whether a kept backup needs ``item``: history files always (timeline switches are followed through them);
    a file whose position is unknown, always; else one on a need's timeline or a later one, at or after its start."""
    segno = wal_position(item, segment_size)
    if item.kind == "history" or segno is None:
        return True
    return any(need.timeline <= item.timeline and segno >= need.segno for need in needs)


def plan_wal(files: Iterable[Any], needs: Sequence[WalNeed], hold: Optional[str] = None,
             segment_size: int = 16 * 1024 * 1024) -> WalPlan:
    """Keep exactly the WAL the kept physical backups (``needs``) and point-in-time recovery from them need.

    ``files``: ``WalFile``s or ``repo/walarchive.Segment``s (the plan holds the same objects).
    ``hold``: a reason to delete nothing (an unreadable physical manifest: its needs are unknown). Without any
    need (no kept base backup), nothing is deleted either: the archive may be all a host has.
    """
    items = sorted(files, key=lambda f: (f.timeline, _position(f, segment_size), f.wal))
    if hold:
        return WalPlan(items, [], needs, hold, segment_size)
    if not needs:
        return WalPlan(items, [], needs, "no kept base or incremental backup records where its WAL starts: "
                                         "the WAL archive is kept", segment_size)
    keep = [f for f in items if wal_needed(f, needs, segment_size)]
    delete = [f for f in items if not wal_needed(f, needs, segment_size)]
    return WalPlan(keep, delete, needs, None, segment_size)


def wal_needs(backups: Iterable[Any], keep_ids: Iterable[str],
              segment_size: int) -> Tuple[List[WalNeed], Optional[str]]:
    """The needs of the kept base and incremental backups, and a hold reason when one records no WAL start."""
    wanted = set(keep_ids)
    needs: List[WalNeed] = []
    for backup in backups:
        manifest = backup.manifest
        if manifest.id not in wanted or manifest.kind not in PHYSICAL_KINDS:
            continue
        timeline = manifest.extra.get("start_timeline") or manifest.timeline
        if not manifest.start_lsn or not timeline:
            return needs, "kept %s records no WAL start (start_lsn, timeline): the WAL archive is kept" % manifest.id
        needs.append(WalNeed(manifest.id, int(timeline), lsn_segno(manifest.start_lsn, segment_size)))
    return needs, None


def lsn_segno(lsn: str, segment_size: int) -> int:
    """The segment number holding ``lsn`` (``"1/2000028"``) with segments of ``segment_size`` bytes."""
    high, _slash, low = lsn.partition("/")
    return ((int(high, 16) << 32) | int(low, 16)) // segment_size


# ----------------------------------------------------------------------------- text output

def format_plan(plan: Any) -> List[str]:
    """Text lines of a plan (a ``RetentionPlan`` or a list of decision dicts) for ``seawall-pgbackup cleanup``."""
    rows = plan.as_dicts() if isinstance(plan, RetentionPlan) else list(plan)
    if not rows:
        return ["no backups"]
    lines = ["%-6s %-45s %-11s %-16s %-20s %s" % ("ACTION", "ID", "TYPE", "DATABASE", "CREATED", "REASONS")]
    for row in rows:
        lines.append("%-6s %-45s %-11s %-16s %-20s %s" % (
            row["action"], row["id"], row["type"], row["database"], row["created_at"][:19] + "Z",
            "; ".join(row["reasons"])))
    deleted = sum(1 for row in rows if row["action"] == DELETE)
    lines.append("keep %d, delete %d of %d backups" % (len(rows) - deleted, deleted, len(rows)))
    return lines
