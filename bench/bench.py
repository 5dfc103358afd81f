"""Benchmark: ``seawall-pgbackup create --type full`` against ``pg_dump -Fc``.

Builds a pgbench database in a throwaway PostgreSQL 15 cluster, then runs the variants
alternately for BENCH_ROUNDS rounds and reports, per variant, the median wall time,
CPU time (user+sys of the whole client process tree), peak RSS and bytes written, plus
the ratios to ``pg_dump -Fc`` and the issue's targets.  See bench/README.md.

Settings (environment):
  BENCH_PYTHON    Python that can import seawall_pgbackup (run.sh: the repo's .venv)
  BENCH_SCALE     pgbench scale factor (default 27, about 400 MB)
  BENCH_ROUNDS    rounds; every variant runs once per round (default 3)
  BENCH_DIR       work directory: cluster, dumps (default /tmp/seawall-bench)
  BENCH_PORT      server port on 127.0.0.1 (default 55450)
  BENCH_KEEP      1: keep the cluster (and reuse one of the same scale) between runs
  BENCH_VARIANTS  comma list (default seawall-gzip,seawall-zstd,pg_dump-Fc);
                  also known: seawall-none, pg_dump-Fc-Z0 (pg_dump without compression) and
                  pg_dump-Fc-Z0-null (the same into /dev/null without fsync: the floor of any
                  tool that streams pg_dump's output, i.e. server COPY + pg_dump alone)
  BENCH_PG_BIN    PostgreSQL bin dir (default /usr/lib/postgresql/15/bin)
  BENCH_RESULTS   JSON output (default bench/results/latest.json)
"""

from __future__ import annotations

import json
import os
import platform
import pwd
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


PG_BIN = Path(os.environ.get("BENCH_PG_BIN") or "/usr/lib/postgresql/15/bin")
PYTHON = os.environ.get("BENCH_PYTHON") or sys.executable
SCALE = env_int("BENCH_SCALE", 27)
ROUNDS = env_int("BENCH_ROUNDS", 3)
PORT = env_int("BENCH_PORT", 55450)  # when not set and 55450 is busy: a free port
KEEP = os.environ.get("BENCH_KEEP", "0").lower() in ("1", "yes", "true", "on")
WORK = Path(os.environ.get("BENCH_DIR") or "/tmp/seawall-bench")
RESULTS = Path(os.environ.get("BENCH_RESULTS") or HERE / "results" / "latest.json")
VARIANTS = [v.strip() for v in (os.environ.get("BENCH_VARIANTS")
                                or "seawall-gzip,seawall-zstd,pg_dump-Fc").split(",") if v.strip()]
KNOWN = ("seawall-gzip", "seawall-zstd", "seawall-none", "seawall-gzip-aes", "seawall-gzip-age", "pg_dump-Fc",
         "pg_dump-Fc-Z0", "pg_dump-Fc-Z0-null")
BASELINE = "pg_dump-Fc"
DB = "bench"
HOST = "127.0.0.1"

CLUSTER = WORK / "cluster"
DATA = CLUSTER / "data"
SOCK = CLUSTER / "sock"
LOG = CLUSTER / "postgres.log"
STATE = CLUSTER / "bench-state.json"
PASSFILE = WORK / "pgpass"
OUT = WORK / "out"

# Server settings while pgbench loads (fast and unsafe); the dumps run with the defaults.
LOAD_OPTS = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c maintenance_work_mem=256MB"


def log(msg: str) -> None:
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


# ----------------------------------------------------------------------------- cluster

def as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:  # postgres refuses to run as root
        return ["runuser", "-u", "postgres", "--"] + argv
    return argv


def server_cmd(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8", TZ="UTC")
    p = subprocess.run(as_server_user(argv), env=env, cwd="/", capture_output=True, text=True, check=False,
                       stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        tail = LOG.read_text(errors="replace")[-3000:] if LOG.exists() else ""
        sys.exit("bench: %s failed (%d)\n%s%s\n%s" % (" ".join(argv), p.returncode, p.stdout, p.stderr, tail))
    return p


def chown_server(path: Path) -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


def client_env(db: str = DB) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "BACKUP_", "DATABASE_URL"))}
    env.update(PGHOST=HOST, PGPORT=str(PORT), PGUSER="postgres", PGDATABASE=db, PGPASSFILE=str(PASSFILE),
               PGSSLMODE="disable", PGTZ="UTC")
    return env


def client(program: str, *args: str, db: str = DB, capture: bool = True) -> str:
    p = subprocess.run([str(PG_BIN / program), *args], env=client_env(db), capture_output=capture, text=True, check=False,
                       stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        sys.exit("bench: %s %s failed (%d): %s" % (program, " ".join(args), p.returncode, p.stderr))
    return p.stdout if capture else ""


def scalar(sql: str, db: str = DB) -> str:
    return client("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql, db=db).strip()


def running() -> bool:
    return (DATA / "postmaster.pid").exists() and server_cmd(
        [str(PG_BIN / "pg_ctl"), "-D", str(DATA), "status"], check=False).returncode == 0


def start(opts: str = "") -> None:
    argv = [str(PG_BIN / "pg_ctl"), "-D", str(DATA), "-l", str(LOG), "-w", "-t", "120",
            "-o", ("-p %d %s" % (PORT, opts)).strip()]
    server_cmd(argv + ["start"])


def stop() -> None:
    if running():
        server_cmd([str(PG_BIN / "pg_ctl"), "-D", str(DATA), "-m", "fast", "-w", "stop"])


def choose_port() -> None:
    """Keep BENCH_PORT when given; otherwise 55450, or a free port when another server has it."""
    global PORT  # pylint: disable=global-statement
    if os.environ.get("BENCH_PORT", "").strip():
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, PORT))
            return
        except OSError:
            pass
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        log("port %d is busy: using %d" % (PORT, s.getsockname()[1]))
        PORT = int(s.getsockname()[1])


def write_passfile(password: str) -> None:
    fd = os.open(PASSFILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("%s:%d:*:postgres:%s\n" % (HOST, PORT, password))


def cached_state() -> dict | None:
    try:
        state = json.loads(STATE.read_text())
    except (OSError, ValueError):
        return None
    if state.get("scale") != SCALE or not (DATA / "PG_VERSION").exists():
        return None
    return state


def load_pgbench() -> None:
    log("pgbench -i -s %d (fsync off) ..." % SCALE)
    client("pgbench", "-i", "-q", "-s", str(SCALE), DB, capture=True)
    client("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", "VACUUM ANALYZE", "-c", "CHECKPOINT")


def build_cluster(load=load_pgbench) -> dict:
    """initdb, ``load`` (default: pgbench at SCALE) with fsync off; return the state (password, sizes)."""
    stop_if_ours()
    shutil.rmtree(CLUSTER, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    os.chmod(WORK, 0o755)
    CLUSTER.mkdir()
    os.chmod(CLUSTER, 0o755)  # the server user must traverse it
    for d in (DATA, SOCK):
        d.mkdir(mode=0o700)
        chown_server(d)
    LOG.touch()
    chown_server(LOG)
    password = secrets.token_urlsafe(18)
    pwfile = CLUSTER / "initdb-pw"
    pwfile.write_text(password + "\n")
    os.chmod(pwfile, 0o600)
    chown_server(pwfile)
    log("initdb %s" % DATA)
    server_cmd([str(PG_BIN / "initdb"), "-D", str(DATA), "-U", "postgres", "--pwfile=" + str(pwfile),
                "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"])
    pwfile.unlink()
    with open(DATA / "postgresql.conf", "a", encoding="utf-8") as f:
        f.write("\n# seawall bench\nlisten_addresses = '%s'\nunix_socket_directories = '%s'\n"
                "log_min_messages = warning\n" % (HOST, SOCK))
    write_passfile(password)
    start(LOAD_OPTS)
    client("createdb", DB, db="postgres")
    t0 = time.perf_counter()
    load()
    load_s = time.perf_counter() - t0
    stop()
    state = {"scale": SCALE, "password": password, "load_seconds": round(load_s, 1)}
    STATE.write_text(json.dumps(state))
    os.chmod(STATE, 0o600)
    log("loaded in %.0f s" % load_s)
    return state


def stop_if_ours() -> None:
    if (DATA / "postmaster.pid").exists():
        try:
            stop()
        except SystemExit:
            pass


# ----------------------------------------------------------------------------- measuring

def proc_tree_hwm(root: int) -> dict[int, tuple[str, int]]:
    """{pid: (comm, VmHWM kB)} of root and its descendants (best effort)."""
    found: dict[int, tuple[str, int]] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            status = Path("/proc/%d/status" % pid).read_text()
            kids = Path("/proc/%d/task/%d/children" % (pid, pid)).read_text().split()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        hwm = int(fields.get("VmHWM", "0 kB").split()[0] or 0)
        found[pid] = (fields.get("Name", "?").strip(), hwm)
        todo.extend(int(k) for k in kids)
    return found


class Sampler(threading.Thread):
    """Samples VmHWM of the process tree every 50 ms (a cross-check of pg_dump's peak under seawall)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_by_name: dict[str, int] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.05):
            for name, hwm in proc_tree_hwm(self.pid).values():
                if hwm > self.peak_by_name.get(name, 0):
                    self.peak_by_name[name] = hwm


def measure(argv: list[str], env: dict[str, str], stdout) -> dict:
    """Run argv as a child; wall, rusage of the child (incl. its waited-for descendants), sampled peaks."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=stdout, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    sampler = Sampler(proc.pid)
    sampler.start()
    stderr = proc.stderr.read()
    status, ru = os.wait4(proc.pid, 0)[1:]
    wall = time.perf_counter() - t0
    sampler.halt.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit("bench: %s exited %d:\n%s" % (argv[0], proc.returncode, stderr.decode(errors="replace")))
    tree_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "wall_s": wall,
        "cpu_s": ru.ru_utime + ru.ru_stime,        # the child and every descendant it waited for
        "cpu_tree_check_s": tree_cpu,               # same thing via RUSAGE_CHILDREN deltas
        "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
        # max over the child and its waited-for descendants; NB Linux carries the spawner's peak RSS
        # across exec into ru_maxrss, so for small processes this is bench.py's RSS: use the VmHWMs
        "tree_maxrss_kb": ru.ru_maxrss,
        "sampled_hwm_kb": sampler.peak_by_name,  # {process name: VmHWM kB}, sampled every 50 ms
    }


def encryption_env(mode: str) -> dict[str, str]:
    """Encrypted variants: a fresh aes-256-gcm key file or age recipient under OUT/keys (outside the backups)."""
    keys = OUT / "keys"
    shutil.rmtree(keys, ignore_errors=True)
    keys.mkdir(mode=0o700, parents=True)
    if mode == "aes":
        key = keys / "bench.key"
        key.write_text(os.urandom(32).hex() + "\n")
        key.chmod(0o600)
        return {"BACKUP_ENCRYPTION": "true", "BACKUP_ENCRYPTION_KEY_FILE": str(key)}
    made = json.loads(subprocess.run([PYTHON, "-m", "seawall_pgbackup.cli.run", "keygen", "--age",
                                      str(keys / "age.txt"), "--json"], capture_output=True, text=True,
                                     check=True).stdout)
    return {"BACKUP_ENCRYPTION": "true", "BACKUP_ENCRYPTION_MODE": "age", "BACKUP_ENCRYPTION_RECIPIENTS": made["recipient"]}


def run_seawall(algorithm: str, state: dict, encryption: str = "") -> dict:
    backup_dir = OUT / ("seawall-%s%s" % (algorithm, "-" + encryption if encryption else ""))
    shutil.rmtree(backup_dir, ignore_errors=True)
    backup_dir.mkdir(parents=True)
    rusage_file = OUT / "seawall-rusage.json"
    rusage_file.unlink(missing_ok=True)
    env = client_env()
    for k in [k for k in env if k.startswith("PG")]:
        del env[k]  # seawall gets everything from DATABASE_URL (it writes its own passfile)
    env.update(DATABASE_URL="postgresql://postgres:%s@%s:%d/%s" % (state["password"], HOST, PORT, DB),
               BACKUP_DIR=str(backup_dir), BACKUP_COMPRESSION=algorithm, BENCH_RUSAGE_FILE=str(rusage_file))
    env.pop("BACKUP_COMPRESSION_LEVEL", None)
    if encryption:
        env.update(encryption_env(encryption))
    with tempfile.TemporaryFile() as out:
        m = measure([PYTHON, str(HERE / "_peak.py"), "create", "--type", "full", "--json"], env, out)
        out.seek(0)
        manifest = json.loads(out.read())
    inner = json.loads(rusage_file.read_text())
    files = manifest["files"]
    on_disk = sum(p.stat().st_size for p in backup_dir.rglob("*")
                  if p.is_file() and any(p.name == f["name"] for f in files))
    m.update(
        bytes=sum(f["size"] for f in files),
        bytes_on_disk=on_disk,
        raw_bytes=sum(f["raw_size"] for f in files),
        files={f["role"]: f["size"] for f in files},
        # seawall's Python process alone: VmHWM at exit (exact); ru_maxrss (>= bench.py's RSS, see _peak.py)
        python_maxrss_kb=inner["self"].get("vmhwm_kb") or inner["self"]["maxrss_kb"],
        python_ru_maxrss_kb=inner["self"]["maxrss_kb"],
        python_cpu_s=inner["self"]["utime"] + inner["self"]["stime"],
        # pg_dump under seawall: sampled VmHWM (rusage of an exec'd vfork child is inflated)
        tools_maxrss_kb=m["sampled_hwm_kb"].get("pg_dump"),
        tools_cpu_s=inner["children"]["utime"] + inner["children"]["stime"],
        manifest_duration_s=manifest["duration_seconds"],
    )
    shutil.rmtree(backup_dir, ignore_errors=True)
    return m


def run_pg_dump(extra: list[str], name: str, to_null: bool = False) -> dict:
    target = Path("/dev/null") if to_null else OUT / ("%s.dump" % name)
    if not to_null:
        target.unlink(missing_ok=True)
    argv = [str(PG_BIN / "pg_dump"), "-Fc", *extra, "--no-password", "-f", str(target), DB]
    if to_null:
        argv.insert(-1, "--no-sync")  # /dev/null cannot be fsynced
        argv[argv.index("-f"):argv.index("-f") + 2] = []  # custom format to stdout
        m = measure(argv, client_env(), subprocess.DEVNULL)
        m.update(bytes=None, bytes_on_disk=None, files={}, tools_maxrss_kb=m["sampled_hwm_kb"].get("pg_dump"),
                 tools_cpu_s=m["cpu_s"], python_maxrss_kb=None, python_cpu_s=None)
        return m
    m = measure(argv, client_env(), subprocess.DEVNULL)
    size = target.stat().st_size
    m.update(bytes=size, bytes_on_disk=size, files={"database": size},
             tools_maxrss_kb=m["sampled_hwm_kb"].get("pg_dump"), tools_cpu_s=m["cpu_s"], python_maxrss_kb=None, python_cpu_s=None)
    target.unlink()
    return m


def run_variant(name: str, state: dict) -> dict:
    if name in ("seawall-gzip-aes", "seawall-gzip-age"):
        return run_seawall("gzip", state, name.rsplit("-", 1)[1])
    if name.startswith("seawall-"):
        return run_seawall(name.split("-", 1)[1], state)
    if name == "pg_dump-Fc":
        return run_pg_dump([], name)
    if name == "pg_dump-Fc-Z0":
        return run_pg_dump(["-Z0"], name)
    if name == "pg_dump-Fc-Z0-null":
        return run_pg_dump(["-Z0"], name, to_null=True)
    raise SystemExit("bench: unknown variant %r (known: %s)" % (name, ", ".join(KNOWN)))


# ----------------------------------------------------------------------------- report

def mib(kb_or_bytes: float | None, unit: int = 1024) -> str:
    return "-" if kb_or_bytes is None else "%.1f" % (kb_or_bytes * unit / 1048576 if unit == 1024
                                                     else kb_or_bytes / 1048576)


def median(runs: list[dict], key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarize(results: dict[str, list[dict]]) -> dict:
    summary = {}
    for name, runs in results.items():
        summary[name] = {k: median(runs, k) for k in (
            "wall_s", "cpu_s", "python_cpu_s", "tools_cpu_s", "python_maxrss_kb", "tools_maxrss_kb",
            "tree_maxrss_kb", "bytes", "raw_bytes")}
        summary[name]["wall_s_all"] = [round(r["wall_s"], 2) for r in runs]
        summary[name]["python_maxrss_kb_max"] = max((r["python_maxrss_kb"] for r in runs
                                                     if r.get("python_maxrss_kb") is not None), default=None)
    base = summary.get(BASELINE)
    if base:
        for name, s in summary.items():
            s["ratio_to_pg_dump"] = {k: (s[k] / base[k] if s.get(k) and base.get(k) else None)
                                     for k in ("wall_s", "cpu_s", "bytes")}
    return summary


def targets(summary: dict) -> list[dict]:
    checks = []
    base = summary.get(BASELINE)
    gz = summary.get("seawall-gzip")
    zs = summary.get("seawall-zstd")
    if base and gz:
        r = gz["wall_s"] / base["wall_s"]
        checks.append({"target": "gzip wall <= 1.1 x pg_dump -Fc", "value": round(r, 3), "ok": r <= 1.1})
    for name in ("seawall-gzip", "seawall-zstd", "seawall-none"):
        s = summary.get(name)
        if s and s.get("python_maxrss_kb_max") is not None:
            v = s["python_maxrss_kb_max"] / 1024
            checks.append({"target": "%s Python peak RSS < 150 MB" % name, "value": round(v, 1), "ok": v < 150})
    if base and zs:
        r = zs["bytes"] / base["bytes"]
        checks.append({"target": "zstd bytes <= pg_dump -Fc bytes", "value": round(r, 3), "ok": r <= 1.0})
        r = zs["wall_s"] / base["wall_s"]
        checks.append({"target": "zstd wall < 0.5 x pg_dump -Fc", "value": round(r, 3), "ok": r < 0.5})
    return checks


def print_report(meta: dict, summary: dict, checks: list[dict]) -> None:
    print()
    print("pgbench scale %d: database %.0f MiB, %d rounds, medians (server CPU not included)"
          % (SCALE, meta["db_bytes"] / 1048576, ROUNDS))
    head = "%-18s %8s %8s %8s %8s %10s %10s %10s %10s" % (
        "variant", "wall s", "cpu s", "py cpu", "tool cpu", "py RSS MiB", "tool RSS", "out MiB", "raw MiB")
    print(head)
    print("-" * len(head))
    for name, s in summary.items():
        print("%-18s %8.2f %8.2f %8s %8.2f %10s %10s %10s %10s" % (
            name, s["wall_s"], s["cpu_s"], "-" if s["python_cpu_s"] is None else "%.2f" % s["python_cpu_s"],
            s["tools_cpu_s"], mib(s["python_maxrss_kb"]), mib(s["tools_maxrss_kb"]),
            mib(s["bytes"], 1), mib(s["raw_bytes"], 1)))
    print()
    print("per-round wall s: " + "; ".join("%s %s" % (n, s["wall_s_all"]) for n, s in summary.items()))
    if BASELINE in summary:
        print()
        print("ratios to %s (median):" % BASELINE)
        for name, s in summary.items():
            if name == BASELINE:
                continue
            r = s["ratio_to_pg_dump"]
            print("  %-18s wall %.2fx  cpu %.2fx  bytes %s" % (name, r["wall_s"], r["cpu_s"],
                                                               "-" if r["bytes"] is None else "%.3fx" % r["bytes"]))
    if checks:
        print()
        print("targets:")
        for c in checks:
            print("  [%s] %-40s %s" % ("PASS" if c["ok"] else "MISS", c["target"], c["value"]))
    print()


def main() -> int:
    for name in VARIANTS:
        if name not in KNOWN:
            sys.exit("bench: unknown variant %r (known: %s)" % (name, ", ".join(KNOWN)))
    if not (PG_BIN / "postgres").is_file():
        sys.exit("bench: %s/postgres not found (apt-get install postgresql-15 or set BENCH_PG_BIN)" % PG_BIN)
    probe = subprocess.run([PYTHON, "-c", "import seawall_pgbackup, zstandard; print(seawall_pgbackup.__version__)"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        sys.exit("bench: %s cannot import seawall_pgbackup and zstandard:\n%s" % (PYTHON, probe.stderr))
    WORK.mkdir(parents=True, exist_ok=True)
    os.chmod(WORK, 0o755)
    try:
        state = cached_state() if KEEP else None
        if state:
            log("reusing the cluster in %s (scale %d)" % (CLUSTER, SCALE))
            stop_if_ours()
            choose_port()
            write_passfile(state["password"])
        else:
            choose_port()
            state = build_cluster()
        start()  # default settings (fsync on) for the dumps
        OUT.mkdir(parents=True, exist_ok=True)
        db_bytes = int(scalar("SELECT pg_database_size(current_database())"))
        meta = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "cpus": os.cpu_count(), "python": PYTHON,
            "seawall_version": probe.stdout.strip(),
            "pg_dump": client("pg_dump", "--version").strip(), "server": scalar("SHOW server_version"),
            "scale": SCALE, "rounds": ROUNDS, "db_bytes": db_bytes, "variants": VARIANTS,
            "load_seconds": state.get("load_seconds"), "loadavg_start": os.getloadavg(),
        }
        log("database %s: %.0f MiB; warm-up (pg_dump -Fc -Z0 to /dev/null)" % (DB, db_bytes / 1048576))
        client("pg_dump", "-Fc", "-Z0", "--no-sync", "-f", "/dev/null", DB)
        results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
        for round_no in range(ROUNDS):
            shift = round_no % len(VARIANTS)  # rotate the order so no variant always runs first
            for name in VARIANTS[shift:] + VARIANTS[:shift]:
                m = run_variant(name, state)
                m.update(round=round_no, loadavg=os.getloadavg()[0])
                results[name].append(m)
                log("round %d %-18s wall %6.2f s  cpu %6.2f s  py RSS %6s MiB  tool RSS %6s MiB  %7s MiB"
                    % (round_no + 1, name, m["wall_s"], m["cpu_s"], mib(m["python_maxrss_kb"]),
                       mib(m["tools_maxrss_kb"]), mib(m["bytes"], 1)))
        meta["loadavg_end"] = os.getloadavg()
        summary = summarize(results)
        checks = targets(summary)
        print_report(meta, summary, checks)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"meta": meta, "summary": summary, "targets": checks, "runs": results},
                                      indent=2, sort_keys=True) + "\n")
        log("wrote %s" % RESULTS)
    finally:
        if KEEP:
            stop()
            log("cluster kept in %s (BENCH_KEEP=1)" % CLUSTER)
        else:
            stop_if_ours()
            for path in (CLUSTER, OUT):
                shutil.rmtree(path, ignore_errors=True)
            PASSFILE.unlink(missing_ok=True)
            try:
                WORK.rmdir()  # only when empty: BENCH_DIR may be a directory of the user's
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
