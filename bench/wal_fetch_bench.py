"""Micro-benchmark: ``wal-fetch`` as restore_command calls it, one process per WAL file, with and without prefetch.

No server: a repository is filled with BENCH_WAL_FILES (default 32) WAL-like 16 MiB segments through our
wal-push (a quarter random bytes, the rest repetitive: they compress about as real WAL does), then, in a scratch
"data directory", the segments are fetched in order, one ``seawall-pgbackup wal-fetch [--spool ...] NAME
pg_wal/RECOVERYXLOG`` process each (as PostgreSQL does, sequentially), followed by one fetch of a segment that is
not archived (the end of recovery: exit 1). Printed per mode: seconds per call (mean, median, p90), the total, the
absent answer, and with prefetch the calls served from a spool that was already full (the fast path alone).

    .venv/bin/python bench/wal_fetch_bench.py            # BENCH_WAL_FILES=32 BENCH_WAL_ENCRYPTION=aes ...

BENCH_WAL_ENCRYPTION=aes: a keyring and encryption on (decryption in every fetch). BENCH_WAL_REPLAY: seconds of
simulated replay between calls (default 0).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20


def command() -> List[str]:
    found = shutil.which("seawall-pgbackup", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    return [found] if found else [sys.executable, "-m", "seawall_pgbackup.cli.run"]


def segment_bytes(number: int) -> bytes:
    line = b"INSERT INTO sessions VALUES (%d, 'player', '{\"score\": 17}', 3.14159);" % number
    body = (line * (12 * MiB // len(line) + 1))[:12 * MiB]
    return os.urandom(4 * MiB) + body


def stats(times: List[float]) -> Dict[str, float]:
    ordered = sorted(times)
    return {"calls": len(times), "mean": round(statistics.mean(times), 4), "median": round(statistics.median(times), 4),
            "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 4), "total": round(sum(times), 3)}


def fetch_all(cmd: List[str], env: Dict[str, str], data: Path, names: List[str], spool: bool,
              replay: float) -> List[float]:
    times = []
    for name in names:
        argv = cmd + ["wal-fetch"] + (["--spool", "pg_wal/seawall-prefetch"] if spool else []) + [
            name, "pg_wal/RECOVERYXLOG"]
        started = time.perf_counter()
        code = subprocess.call(argv, env=env, cwd=str(data))
        times.append(time.perf_counter() - started)
        if code != 0:
            raise SystemExit("wal-fetch %s exited %d" % (name, code))
        time.sleep(replay)
    return times


def absent(cmd: List[str], env: Dict[str, str], data: Path, name: str, spool: bool) -> float:
    argv = cmd + ["wal-fetch"] + (["--spool", "pg_wal/seawall-prefetch"] if spool else []) + [
        name, "pg_wal/RECOVERYXLOG"]
    started = time.perf_counter()
    code = subprocess.call(argv, env=env, cwd=str(data))
    if code != 1:
        raise SystemExit("wal-fetch of an absent file exited %d, not 1" % code)
    return time.perf_counter() - started


def main() -> int:
    files = int(os.environ.get("BENCH_WAL_FILES") or 32)
    replay = float(os.environ.get("BENCH_WAL_REPLAY") or 0)
    base = Path(tempfile.mkdtemp(prefix="seawall-walfetch-bench-"))
    os.chmod(base, 0o700)
    cmd = command()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUP_", "DATABASE_URL"))}
    env["BACKUP_DIR"] = str(base / "backups")
    try:
        if os.environ.get("BENCH_WAL_ENCRYPTION") == "aes":
            sys.path.insert(0, str(ROOT / "plugins" / "module_utils"))
            from seawall_pgbackup.codec.keyring import write_key_file  # pylint: disable=import-outside-toplevel
            (base / "keys").mkdir(mode=0o700)
            write_key_file(str(base / "keys" / "ring"), str(base / "backups"))
            env.update(BACKUP_ENCRYPTION="true", BACKUP_ENCRYPTION_KEYRING=str(base / "keys" / "ring"))
        source = base / "source"
        source.mkdir()
        names = ["0000000100000000000000%02X" % n for n in range(1, files + 1)]
        for number, name in enumerate(names):
            (source / name).write_bytes(segment_bytes(number))
            subprocess.run(cmd + ["wal-push", str(source / name)], env=env, check=True)
        results: Dict[str, Dict] = {}
        for mode, spool in (("without prefetch", False), ("with prefetch", True)):
            data = base / ("data-" + mode.replace(" ", "-"))
            (data / "pg_wal").mkdir(parents=True, mode=0o700)
            os.chmod(data, 0o700)
            times = fetch_all(cmd, env, data, names, spool, replay)
            missing = absent(cmd, env, data, "0000000100000000000000FF", spool)
            results[mode] = dict(stats(times), absent=round(missing, 4))
            if spool:
                subprocess.call(cmd + ["wal-prefetch-stop", "pg_wal/seawall-prefetch"], env=env, cwd=str(data))
                # the fast path alone: the first call starts the prefetcher; wait until it filled the spool
                warm = base / "data-warm"
                (warm / "pg_wal").mkdir(parents=True, mode=0o700)
                fetch_all(cmd, env, warm, names[:1], True, 0)
                spool_dir = warm / "pg_wal" / "seawall-prefetch"
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and len([n for n in os.listdir(spool_dir) if len(n) == 24]) < min(
                        8, files - 1):
                    time.sleep(0.05)
                served = fetch_all(cmd, env, warm, names[1:min(9, files)], True, 0)
                results["from a full spool"] = stats(served)
                subprocess.call(cmd + ["wal-prefetch-stop", "pg_wal/seawall-prefetch"], env=env, cwd=str(warm))
        baseline = []
        for _round in range(8):  # what any Python command costs here: the floor of the fast path
            started = time.perf_counter()
            subprocess.call([sys.executable, "-c", "pass"], env=env)
            baseline.append(time.perf_counter() - started)
        results["python -c pass"] = stats(baseline)
        print(json.dumps({"files": files, "segment_mb": 16, "encryption": env.get("BACKUP_ENCRYPTION") == "true",
                          "replay_seconds": replay, "command": cmd, "results": results}, indent=2))
        for mode, row in results.items():
            print("%-18s %3d calls: mean %.3f s, median %.3f s, p90 %.3f s, total %.2f s%s"
                  % (mode, row["calls"], row["mean"], row["median"], row["p90"], row["total"],
                     ", absent %.3f s" % row["absent"] if "absent" in row else ""))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
