"""Benchmark: retention over 10,000 manifests (issue 3: "Pruning 10,000 manifests plans in under a second").

Builds a repository of 10,000 manifests in a temporary directory (a year of hourly incrementals in
daily chains, two years of daily fulls, weekly schema and some data-only backups), then times, over
several rounds:

  list        Repository.backups(include_bad=True): read and parse every manifest
  plan        plan_retention() on those Backup objects (converting each to a record included)
  plan-only   plan_retention() on ready BackupRecords: the pure planner
  dry-run     prune.cleanup(dry_run=True): list + plan + leftovers (which reads the manifests again)
and once, on a copy, the real cleanup (the deletions are file-system work, shown for information).

Prints medians and the issue's target; never fails on timing. Settings (environment):
  BENCH_MANIFESTS  number of manifests (default 10000)
  BENCH_ROUNDS     rounds (default 5)
  BENCH_APPLY      0 to skip the real cleanup (default 1)
  BENCH_RESULTS    JSON output (default bench/results/retention-latest.json)

Run: .venv/bin/python bench/retention_bench.py
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

try:
    from seawall_pgbackup.ops import cleanup as prune
    from seawall_pgbackup.model.manifest import FORMAT_VERSION
    from seawall_pgbackup.repo.catalog import Repository
    from seawall_pgbackup.core.clock import iso
    from seawall_pgbackup.config.settings import load_config
    from seawall_pgbackup.repo.retention import plan_retention, record_of
except ImportError:  # not installed: use the checkout's engine directly
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "module_utils"))
    from pgbackup import prune  # type: ignore[no-redef]
    from pgbackup.catalog import FORMAT_VERSION, Repository, iso  # type: ignore[no-redef]
    from pgbackup.config import load_config  # type: ignore[no-redef]
    from pgbackup.retention import plan_retention, record_of  # type: ignore[no-redef]

UTC = timezone.utc
NOW = datetime(2026, 11, 26, 5, 30, tzinfo=UTC)
TARGET_SECONDS = 1.0


def _write_manifest(repo: Repository, kind: str, moment: datetime, parent=None, verification=None) -> str:
    """The manifest the engine writes (same keys and JSON layout), without fsync: the benchmark reads, it does not
    measure writing. Data files are not created: listing and planning never open them."""
    backup_id = repo.new_id(kind, "vtt", moment)
    name = backup_id + ".dump.gz"
    manifest = {
        "format_version": FORMAT_VERSION, "id": backup_id, "type": kind, "method": "logical", "status": "ok",
        "database": "vtt", "created_at": iso(moment), "finished_at": iso(moment + timedelta(seconds=40)),
        "duration_seconds": 40.0, "compression": "gzip", "encryption": None, "parent": parent,
        "server": {"version": "15.18", "system_identifier": "7311111111111111111"},
        "client": {"pg_dump": "15.18"},
        "files": [{"name": name, "role": "database", "size": 123456, "compression": "gzip",
                   "sha256": "b1a553be36cb4587599ba663427565bd03b864091cebb9ec8fb6cbb43684bb74"}],
        "table_rows": {"public.t%d" % i: i * 100 for i in range(12)},
        "verification": verification,
    }
    with open(repo.manifest_path(kind, backup_id), "w", encoding="utf-8") as handle:
        handle.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return backup_id


def build(root: str, total: int) -> dict:
    repo = Repository(root)
    repo.prepare()
    counts = {"full": 0, "incremental": 0, "schema": 0, "data": 0}
    fulls_per_day = {}
    days = 730
    for day in range(days):  # daily fulls at 02:00, the newest today
        moment = NOW.replace(hour=2, minute=0) - timedelta(days=day)
        check = {"level": "checksum", "at": iso(moment), "ok": day % 53 != 7, "details": "", "duration_seconds": 1.0} \
            if day % 5 == 0 else None
        fulls_per_day[moment.date()] = _write_manifest(repo, "full", moment, verification=check)
        counts["full"] += 1
    for week in range(104):
        _write_manifest(repo, "schema", NOW.replace(hour=3, minute=0) - timedelta(days=1 + 7 * week))
        counts["schema"] += 1
    remaining = total - sum(counts.values())
    data = max(0, remaining - 24 * 365)
    for index in range(data):
        _write_manifest(repo, "data", NOW - timedelta(hours=7 + 37 * index))
        counts["data"] += 1
    incrementals = total - sum(counts.values())
    parent = None
    for hour in range(incrementals, 0, -1):  # hourly, oldest first, each on the previous; a new chain every day
        moment = NOW.replace(minute=15) - timedelta(hours=hour)
        if moment.hour == 3:
            parent = fulls_per_day.get(moment.date())
        parent = _write_manifest(repo, "incremental", moment, parent=parent)
        counts["incremental"] += 1
    return counts


def _time(function, rounds: int):
    times = []
    value = None
    for _round in range(rounds):
        started = time.perf_counter()
        value = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times, value


def main() -> int:
    total = int(os.environ.get("BENCH_MANIFESTS", "10000"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "5"))
    apply = os.environ.get("BENCH_APPLY", "1") != "0"
    results_path = Path(os.environ.get("BENCH_RESULTS", str(Path(__file__).resolve().parent / "results"
                                                            / "retention-latest.json")))
    work = tempfile.mkdtemp(prefix="seawall-retention-bench-")
    try:
        root = os.path.join(work, "backups")
        started = time.perf_counter()
        counts = build(root, total)
        build_seconds = time.perf_counter() - started
        cfg = load_config(env={"BACKUP_DIR": root})
        policies = prune.policies_of(cfg)
        schedules = prune.schedules_of(cfg)
        repo = Repository(root)
        print("retention benchmark: %d manifests (%s) built in %.1f s in %s"
              % (sum(counts.values()), ", ".join("%s %d" % kv for kv in counts.items()), build_seconds, root))

        list_s, list_all, backups = _time(lambda: repo.backups(include_bad=True), rounds)
        plan_s, plan_all, plan = _time(lambda: plan_retention(backups, policies, NOW, cfg.timezone, schedules), rounds)
        records = [record_of(b) for b in backups]
        pure_s, pure_all, _plan = _time(lambda: plan_retention(records, policies, NOW, cfg.timezone, schedules), rounds)
        dry_s, dry_all, dry = _time(lambda: prune.cleanup(cfg, dry_run=True, now=NOW), rounds)
        assert len(backups) == total and dry["to_delete"] == plan.delete
        rows = [("list (Repository.backups)", list_s, list_all), ("plan (Backup objects)", plan_s, plan_all),
                ("plan-only (records)", pure_s, pure_all), ("cleanup --dry-run", dry_s, dry_all)]
        apply_s = None
        if apply:
            copy = os.path.join(work, "copy")
            shutil.copytree(root, copy)
            copy_cfg = load_config(env={"BACKUP_DIR": copy})
            started = time.perf_counter()
            applied = prune.cleanup(copy_cfg, now=NOW)
            apply_s = time.perf_counter() - started
            rows.append(("cleanup (deletes %d)" % len(applied["deleted"]), apply_s, [apply_s]))

        print("keep %d, delete %d; medians of %d rounds:" % (len(plan.keep), len(plan.delete), rounds))
        print("  %-28s %9s   %s" % ("step", "median s", "rounds"))
        for name, median, every in rows:
            print("  %-28s %9.3f   %s" % (name, median, " ".join("%.3f" % t for t in every)))
        list_plus_plan = list_s + plan_s
        print("target: list + plan of %d manifests < %.1f s: %.3f s (list %.0f%%, plan %.0f%%) -> %s"
              % (total, TARGET_SECONDS, list_plus_plan, 100 * list_s / list_plus_plan, 100 * plan_s / list_plus_plan,
                 "PASS" if list_plus_plan < TARGET_SECONDS else "MISS"))
        print("        planning alone: %.3f s -> %s" % (plan_s, "PASS" if plan_s < TARGET_SECONDS else "MISS"))

        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps({
            "when": datetime.now(UTC).isoformat(), "python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "manifests": counts, "rounds": rounds, "build_seconds": build_seconds,
            "median_seconds": {"list": list_s, "plan": plan_s, "plan_only": pure_s, "dry_run": dry_s, "apply": apply_s},
            "all_seconds": {"list": list_all, "plan": plan_all, "plan_only": pure_all, "dry_run": dry_all},
            "keep": len(plan.keep), "delete": len(plan.delete), "target_seconds": TARGET_SECONDS,
        }, indent=2) + "\n")
        print("results: %s" % results_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
