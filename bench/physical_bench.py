"""Benchmark: physical backups (issue #12) against Debian's pgBackRest, side by side on one cluster.

Builds a realistic database (players with jsonb profiles, game sessions with numerics, text and jsonb,
b-tree and GIN indexes; not pgbench's blank filler) of BENCH_PHYS_MB megabytes in a throwaway PostgreSQL
cluster that archives its WAL to both tools, then measures in one run:

  base      seawall ``create --type base`` (gzip) and ``pgbackrest backup --type=full`` (gz, same process count):
            wall time and stored bytes;
  incr      after updating BENCH_PHYS_CHANGE (default 1%) of the sessions at random: seawall ``create --type
            incremental`` (native on 17+, the archived WAL on 15/16) and ``pgbackrest backup --type=incr``:
            stored bytes as a share of each tool's full;
  restore   seawall ``restore --pgdata`` (point-in-time, to the end of the archive) and ``pgbackrest restore``,
            each followed by starting the server until it accepts connections out of recovery;
  rpo       commits for BENCH_RPO_SECONDS (default 150), kill -9 of the server, its data directory lost, seawall's
            restore to the end of the archive: the seconds of commits lost (archive_timeout = 60).

Prints the ratios against the issue's targets (incremental <= 25% of a full; base wall <= pgBackRest's full;
restore + start <= 1.2x pgBackRest's). pgBackRest 2.45 supports PostgreSQL up to 15: BENCH_PG_BIN defaults to
Debian's 15. Run as root (the server and both tools run as OS user ``postgres``). Needs ``apt-get install
pgbackrest`` (``make bench-deps``).

Settings (environment): BENCH_PHYS_MB (default 1536), BENCH_PHYS_CHANGE (default 0.01), BENCH_DIR (default
/tmp/seawall-bench-physical), BENCH_PG_BIN, BENCH_PORT, BENCH_KEEP (reuse a loaded cluster of the same size),
BENCH_RESULTS (default bench/results/physical.json).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("BENCH_DIR", "/tmp/seawall-bench-physical")
os.environ.setdefault("BENCH_RESULTS", str(Path(__file__).resolve().parent / "results" / "physical.json"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
# bench.py's cluster helpers and measure(), configured by the environment set above
import bench as common  # noqa: E402  pylint: disable=wrong-import-position

SIZE_MB = common.env_int("BENCH_PHYS_MB", 1536)
CHANGE = float(os.environ.get("BENCH_PHYS_CHANGE") or 0.01)
RPO_SECONDS = common.env_int("BENCH_RPO_SECONDS", 150)
STANZA = "bench"
PGBR_CONF = common.WORK / "pgbackrest.conf"
PGBR_REPO = common.WORK / "pgbackrest-repo"
SEAWALL_REPO = common.WORK / "seawall-repo"
PGBR_LOCK = common.WORK / "pgbackrest-run"  # its lock and log files
RESTORED = common.WORK / "restored"
SHIM = common.WORK / "shim"
PEER = "local all postgres peer\n"
# Sessions make up most of the size: ~2,300 rows per MB with their indexes (1,300 gave 860 MB for 1,536).
SESSIONS_PER_MB = 2300

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
    argv = common.as_server_user(["env", "PYTHONPATH=" + path, python, "-m", "seawall_pgbackup",
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
    PGBR_CONF.write_text("[global]\nrepo1-path=%s\nstart-fast=y\nprocess-max=1\ncompress-type=gz\ncompress-level=1\n"
                         "log-level-console=warn\nlog-path=%s\nlock-path=%s\n\n[%s]\npg1-path=%s\npg1-port=%d\n"
                         "pg1-socket-path=%s\n" % settings)
    for path in (PGBR_REPO, SEAWALL_REPO, PGBR_LOCK):
        path.mkdir(mode=0o700, exist_ok=True)
        common.chown_server(path)
    common.chown_server(PGBR_CONF)


def archive_settings() -> str:
    python, path = server_python()
    seawall_push = "PYTHONPATH=%s BACKUP_DIR=%s %s -m seawall_pgbackup wal-push %%p" % (path, SEAWALL_REPO, python)
    return ("wal_level = replica\narchive_mode = on\narchive_timeout = 60\n"
            "archive_command = 'pgbackrest --config=%s --stanza=%s archive-push %%p && %s'\n"
            % (PGBR_CONF, STANZA, seawall_push))


def load_game_data() -> None:
    """Our schema instead of pgbench's filler (bench.build_cluster's load step: fsync off, server running)."""
    players = max(1000, SIZE_MB * SESSIONS_PER_MB // 20)
    sessions = SIZE_MB * SESSIONS_PER_MB
    common.log("loading %d players, %d sessions (~%d MB) ..." % (players, sessions, SIZE_MB))
    common.client("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", SCHEMA, "-c", LOAD_PLAYERS % {"players": players})
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
    segment = common.scalar("SELECT pg_walfile_name(pg_switch_wal())")
    deadline = time.monotonic() + timeout
    while common.scalar("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < segment:
        if time.monotonic() > deadline:
            sys.exit("bench: %s was not archived within %d s" % (segment, timeout))
        time.sleep(0.2)


def update_share(state: dict) -> None:
    count = int(sessions_count() * CHANGE)
    common.log("updating %d sessions at random (%.1f%%)" % (count, CHANGE * 100))
    common.client("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
                  "UPDATE sessions SET score = score + 1, notes = coalesce(notes, '') || ' replay', "
                  "events = events || '{\"replayed\": true}' WHERE id IN (SELECT 1 + floor(random() * %d)::bigint "
                  "FROM generate_series(1, %d))" % (sessions_count(), count), "-c", "CHECKPOINT")


def restore_and_start(kind: str, state: dict) -> dict:
    """Restore into RESTORED with one tool, start a server on it until it accepts connections, stop it."""
    common.stop()
    shutil.rmtree(RESTORED, ignore_errors=True)
    RESTORED.mkdir(mode=0o700)
    common.chown_server(RESTORED)
    t0 = time.perf_counter()
    if kind == "seawall":
        step = seawall(state, "restore", "latest", "--type", "base", "--pgdata", str(RESTORED / "data"),
                       "--target-latest")
        data = RESTORED / "data"
    else:
        step = pgbackrest("restore", "--pg1-path=" + str(RESTORED / "data"), "--type=default")
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
        argv = common.as_server_user(["env", "PYTHONPATH=" + path, python, "-m", "seawall_pgbackup",
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
            newest = int(common.scalar("SELECT coalesce(max(n), 0) FROM rpo") or 0)
            older = [n for n, at in enumerate(committed, 1) if at < crashed - 60]
            missing = int(common.scalar("SELECT %d - count(*) FROM rpo WHERE n <= %d" % (len(older), len(older))))
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
    if shutil.which("pgbackrest") is None:
        sys.exit("bench: pgbackrest not found: apt-get install pgbackrest (make bench-deps)")
    common.choose_port()
    common.SCALE = SIZE_MB  # the key of bench.py's cached cluster state
    state = common.cached_state() if common.KEEP else None
    state = state or common.build_cluster(load=load_game_data)
    for path in (PGBR_REPO, SEAWALL_REPO, PGBR_LOCK):
        shutil.rmtree(path, ignore_errors=True)
    write_configs()
    with open(common.DATA / "postgresql.conf", "a", encoding="utf-8") as handle:
        handle.write("\n# physical bench\n" + archive_settings())
    hba = common.DATA / "pg_hba.conf"
    if not hba.read_text().startswith(PEER):  # pgbackrest connects over the socket as the server's OS user
        hba.write_text(PEER + hba.read_text())
    common.start()
    try:
        return run_all(state)
    finally:
        common.stop_if_ours()


def run_all(state: dict) -> int:
    common.server_cmd(["pgbackrest", "--config=" + str(PGBR_CONF), "--stanza=" + STANZA, "stanza-create"])
    results: dict = {"meta": {"db_bytes": int(common.scalar("SELECT pg_database_size(current_database())")),
                              "change": CHANGE,
                              "major": int(common.scalar("SHOW server_version_num")) // 10000,
                              "pgbackrest": subprocess.run(["pgbackrest", "version"], capture_output=True,
                                                           text=True, check=False).stdout.strip()}}
    common.log("base backups")
    results["seawall_base"] = seawall(state, "create", "--type", "base")
    results["seawall_base"]["bytes"] = seawall_bytes("base")
    results["pgbackrest_full"] = pgbackrest("backup", "--type=full")
    switch_and_wait()
    wal_before = stored_bytes(SEAWALL_REPO / "wal")  # on 15/16 an incremental is the WAL archived after this
    update_share(state)
    common.log("incremental backups")
    results["seawall_incr"] = seawall(state, "create", "--type", "incremental")
    wal_since = stored_bytes(SEAWALL_REPO / "wal") - wal_before if results["meta"]["major"] < 17 else 0
    results["seawall_incr"]["bytes"] = seawall_bytes("incremental") + wal_since
    results["pgbackrest_incr"] = pgbackrest("backup", "--type=incr")
    info = pgbackrest_info()
    results["pgbackrest_full"]["bytes"] = info[0]["info"]["repository"]["delta"]
    results["pgbackrest_incr"]["bytes"] = info[-1]["info"]["repository"]["delta"]
    switch_and_wait()
    common.log("restore + start")
    results["seawall_restore"] = restore_and_start("seawall", state)
    results["pgbackrest_restore"] = restore_and_start("pgbackrest", state)
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

    incr_share = ratio(results["seawall_incr"]["bytes"], results["seawall_base"]["bytes"])
    pgbr_share = ratio(results["pgbackrest_incr"]["bytes"], results["pgbackrest_full"]["bytes"])
    base_ratio = ratio(results["seawall_base"]["wall_s"], results["pgbackrest_full"]["wall_s"])
    restore_ratio = ratio(results["seawall_restore"]["restore_and_start_s"],
                          results["pgbackrest_restore"]["restore_and_start_s"])
    rows = [
        ("incremental bytes / full bytes", incr_share, 0.25, "pgBackRest %.0f%%" % (pgbr_share * 100)),
        ("base wall / pgBackRest full wall", base_ratio, 1.0, "%.1f s vs %.1f s" % (
            results["seawall_base"]["wall_s"], results["pgbackrest_full"]["wall_s"])),
        ("restore+start / pgBackRest's", restore_ratio, 1.2, "%.1f s vs %.1f s" % (
            results["seawall_restore"]["restore_and_start_s"],
            results["pgbackrest_restore"]["restore_and_start_s"])),
        ("RPO archive_timeout=60 (+reload)", results["rpo"]["archive_timeout"]["lost_seconds"], 60.0,
         "seconds lost; %d rows, %d older than 60 s missing" % (
             results["rpo"]["archive_timeout"]["rows"], results["rpo"]["archive_timeout"]["missing_older_than_60s"])),
        ("RPO wal-receive", results["rpo"]["wal_receive"]["lost_seconds"], 60.0,
         "seconds lost; %d rows, %d older than 60 s missing" % (
             results["rpo"]["wal_receive"]["rows"], results["rpo"]["wal_receive"]["missing_older_than_60s"])),
    ]
    print("\nPostgreSQL %s, database %.0f MB, %.1f%% of sessions updated; %s" % (
        results["meta"]["major"], (results["meta"]["db_bytes"] or 0) / 2**20, CHANGE * 100,
        results["meta"]["pgbackrest"]))
    for name, value, target, detail in rows:
        print("  %-34s %6.2f  target <= %.2f  %s  (%s)" % (name, value, target, "met" if value <= target else "MISSED",
                                                           detail))
    results["targets"] = [{"name": n, "value": v, "target": t, "met": v <= t} for n, v, t, _d in rows]


if __name__ == "__main__":
    sys.exit(main())
