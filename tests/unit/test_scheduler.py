"""The foreground scheduler's pure parts over a fake clock: next runs (against real systemd timers' OnCalendar
values, so `schedule` and the timers never disagree), Persistent=-style catch-up, overlap, the lock queue,
stopping, reloading; and the job table the schedule_jobs filter and `schedule` share."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
from datetime import datetime, timedelta, timezone
from typing import Dict, List, Optional, Sequence
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seawall_pgbackup.config.jobs import JOBS, config_jobs, job_table
from seawall_pgbackup.config.settings import load_config
from seawall_pgbackup.core.cron import Cron
from seawall_pgbackup.core.errors import ConfigError
from seawall_pgbackup.core.nextrun import catch_up, next_run, previous_run
from seawall_pgbackup.core.oncalendar import NotExpressible, to_oncalendar
from seawall_pgbackup.model.runrecord import write_run
from seawall_pgbackup.observe.metrics import metrics_text
from seawall_pgbackup.ops import scheduler as sched
from seawall_pgbackup.ops.scheduler import Scheduler, Signals, run_loop

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")

# Moments around which the calendar is tricky: DST changes (Berlin, New York), month ends, a leap day.
EDGES = [
    datetime(2026, 3, 29, 0, 20, tzinfo=UTC),   # Berlin: 02:00 CET -> 03:00 CEST at 01:00 UTC
    datetime(2026, 10, 25, 0, 10, tzinfo=UTC),  # Berlin: 03:00 CEST -> 02:00 CET at 01:00 UTC
    datetime(2026, 3, 8, 6, 40, tzinfo=UTC),    # New York: 02:00 EST -> 03:00 EDT at 07:00 UTC
    datetime(2026, 11, 1, 5, 10, tzinfo=UTC),   # New York: 02:00 EDT -> 01:00 EST at 06:00 UTC
    datetime(2026, 1, 31, 23, 50, tzinfo=UTC),
    datetime(2028, 2, 28, 23, 0, tzinfo=UTC),
    datetime(2026, 12, 31, 22, 59, tzinfo=UTC),
]
ZONES = {"UTC": UTC, "Europe/Berlin": BERLIN, "America/New_York": NEW_YORK}


def systemd_elapses(specs: Sequence[str], zone: str, base: datetime, count: int) -> List[datetime]:
    """The union of the next ``count`` elapses of every OnCalendar value, by systemd, in the host zone ``zone``."""
    env = dict(os.environ, TZ=zone, LC_ALL="C", SYSTEMD_COLORS="0", SYSTEMD_PAGER="")
    proc = subprocess.run([SYSTEMD_ANALYZE, "calendar", "--iterations=%d" % count,
                           "--base-time=@%d" % base.timestamp(), *specs],
                          env=env, capture_output=True, text=True, timeout=60, check=True)
    found = set()
    for line in proc.stdout.splitlines():
        label, _sep, value = line.strip().partition(": ")
        if value.endswith(" UTC") and (label in ("(in UTC)", "Next elapse") or label.startswith("Iter. #")):
            found.add(datetime.strptime(value[:-4], "%a %Y-%m-%d %H:%M:%S").replace(tzinfo=UTC))
    return sorted(found)[:count]


def ours(expression: str, zone, base: datetime, count: int) -> List[datetime]:
    cron, found, moment = Cron(expression), [], base
    while len(found) < count:
        moment = next_run(cron, moment, zone)
        if moment is None:
            break
        found.append(moment.astimezone(UTC))
    return found


def _field(values, low, high):
    return st.one_of(st.just("*"), st.sampled_from(["*/%d" % s for s in (2, 3, 5, 7, 15, 20)]),
                     st.lists(st.integers(low, high), min_size=1, max_size=3, unique=True).map(
                         lambda v: ",".join(str(x) for x in sorted(v))),
                     st.tuples(st.integers(low, high), st.integers(low, high)).map(
                         lambda ab: "%d-%d" % (min(ab), max(ab))))


CRON = st.tuples(_field(None, 0, 59), _field(None, 0, 23),
                 st.one_of(st.just("*"), st.sampled_from(["1", "15", "28", "29", "30", "31", "29-31", "1,31"])),
                 st.one_of(st.just("*"), st.sampled_from(["2", "1,3", "2-3", "12", "*/2"])),
                 st.one_of(st.just("*"), st.sampled_from(["0", "1-5", "6,0", "5", "mon", "*/2"]))).map(" ".join)


@needs_systemd
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expression=CRON, edge=st.sampled_from(EDGES), zone=st.sampled_from(sorted(ZONES)),
       offset=st.integers(-180, 180))
def test_next_runs_are_the_systemd_timers_elapses(expression, edge, zone, offset):
    """The timers run OnCalendar= values from core/oncalendar.py in the host's zone; `schedule` uses next_run."""
    try:
        specs = to_oncalendar(expression)
    except NotExpressible:
        assert next_run(Cron(expression), edge, ZONES[zone]) is None
        return
    base = edge + timedelta(minutes=offset)
    expected = systemd_elapses(specs, zone, base, 6)
    assert expected, "systemd-analyze printed no elapse for %s" % specs  # every generated expression fires
    assert ours(expression, ZONES[zone], base, len(expected)) == expected


@pytest.mark.parametrize("expression,base,zone,expected", [
    # 02:30 does not exist on the day Berlin springs forward: no run that day (systemd's rule)
    ("30 2 * * *", datetime(2026, 3, 28, 12, tzinfo=UTC), BERLIN, datetime(2026, 3, 30, 0, 30, tzinfo=UTC)),
    # 02:30 exists twice when it falls back: one run, the first
    ("30 2 * * *", datetime(2026, 10, 24, 12, tzinfo=UTC), BERLIN, datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
    ("30 2 * * *", datetime(2026, 10, 25, 0, 30, tzinfo=UTC), BERLIN, datetime(2026, 10, 26, 1, 30, tzinfo=UTC)),
    # the repeated hour's second pass: a half-hourly job goes on at 03:00 CET, not again at 02:00 CET
    ("0,30 * * * *", datetime(2026, 10, 25, 0, 30, tzinfo=UTC), BERLIN, datetime(2026, 10, 25, 2, 0, tzinfo=UTC)),
    ("0 0 31 * *", datetime(2026, 4, 1, tzinfo=UTC), UTC, datetime(2026, 5, 31, tzinfo=UTC)),
    ("0 0 29 2 *", datetime(2026, 3, 1, tzinfo=UTC), UTC, datetime(2028, 2, 29, tzinfo=UTC)),
    ("0 0 13 * 5", datetime(2026, 2, 6, 1, tzinfo=UTC), UTC, datetime(2026, 2, 13, tzinfo=UTC)),  # 13th OR Friday
    ("0 0 30 2 *", datetime(2026, 1, 1, tzinfo=UTC), UTC, None),
])
def test_next_run_cases(expression, base, zone, expected):
    assert next_run(Cron(expression), base, zone) == expected


@settings(max_examples=200, deadline=None)
@given(expression=CRON, edge=st.sampled_from(EDGES), zone=st.sampled_from(sorted(ZONES)),
       offset=st.integers(-600, 600))
def test_previous_and_next_run_agree(expression, edge, zone, offset):
    cron, tz, moment = Cron(expression), ZONES[zone], edge + timedelta(minutes=offset)
    following = next_run(cron, moment, tz)
    if following is None:
        return
    assert following > moment
    if following.astimezone(tz).fold:  # the repeated hour's second pass, reached from inside it: not a first occurrence
        assert moment.astimezone(tz).fold and following - moment < timedelta(hours=1)
        return
    assert previous_run(cron, following, tz) == following
    before = previous_run(cron, following - timedelta(seconds=1), tz)
    assert before is None or (before <= moment and next_run(cron, before, tz) == following)
    assert cron.matches(following.astimezone(tz).replace(tzinfo=None))


def test_catch_up_is_one_run_however_many_were_missed():
    cron, now = Cron("0 * * * *"), datetime(2026, 6, 1, 12, 30, tzinfo=UTC)
    assert catch_up(cron, UTC, datetime(2026, 6, 1, 11, 0, 5, tzinfo=UTC), now) == datetime(2026, 6, 1, 12, tzinfo=UTC)
    assert catch_up(cron, UTC, datetime(2026, 5, 1, 11, 0, tzinfo=UTC), now) == datetime(2026, 6, 1, 12, tzinfo=UTC)
    assert catch_up(cron, UTC, datetime(2026, 6, 1, 12, 0, 1, tzinfo=UTC), now) is None  # ran at its time
    assert catch_up(cron, UTC, None, now) is None  # never ran: no stamp, no catch-up (as systemd)
    assert catch_up(cron, UTC, now + timedelta(days=1), now) is None  # a clock set back


# --------------------------------------------------------------------------- the loop, over a fake clock

class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds


class FakeProcess:
    count = 0

    def __init__(self, arguments: Sequence[str]) -> None:
        FakeProcess.count += 1
        self.pid = 100000 + FakeProcess.count
        self.arguments = list(arguments)
        self.code: Optional[int] = None
        self.signals: List[int] = []
        self.obeys = True  # ends on SIGTERM

    def poll(self) -> Optional[int]:
        return self.code

    def send_signal(self, signum: int) -> None:
        self.signals.append(signum)
        if signum == signal.SIGKILL or (signum == signal.SIGTERM and self.obeys):
            self.code = -signum


class Harness:
    def __init__(self, tmp_path, jobs, start: datetime, jitter: int = 0) -> None:
        self.clock = Clock(start)
        self.log_dir = str(tmp_path / "logs")
        os.makedirs(self.log_dir, mode=0o700, exist_ok=True)
        self.out = io.StringIO()
        self.spawned: List[FakeProcess] = []
        self.scheduler = Scheduler(jobs, UTC, self.log_dir, global_args=["--backup-dir", str(tmp_path)],
                                   jitter=jitter, spawn=self.spawn, now=lambda: self.clock.now,
                                   monotonic=lambda: self.clock.mono, out=self.out, log_format="json")

    def spawn(self, arguments):
        process = FakeProcess(arguments)
        self.spawned.append(process)
        return process

    def events(self, kind: Optional[str] = None) -> List[Dict]:
        lines = [json.loads(line) for line in self.out.getvalue().splitlines()]
        return [e for e in lines if kind is None or e["event"] == kind]

    def run_for(self, seconds: int, step: int = 1) -> None:
        for elapsed in range(0, seconds, step):
            self.clock.advance(min(step, seconds - elapsed))
            self.scheduler.tick()


def jobs_of(**schedules: str):
    return job_table(schedules)


def test_a_job_still_running_at_its_next_time_is_skipped_and_counted(tmp_path, monkeypatch):
    def no_group(pid, signum):
        raise OSError()

    monkeypatch.setattr(sched.os, "killpg", no_group)
    h = Harness(tmp_path, jobs_of(full="* * * * *"), datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC))
    h.scheduler.start()
    start = h.events("scheduled")[0]
    assert start["job"] == "full" and start["next"] == "2026-06-01T12:01:00.000000Z"
    h.run_for(31)
    assert len(h.spawned) == 1 and h.spawned[0].arguments == ["--backup-dir", str(tmp_path), "create", "--type", "full"]
    h.run_for(120)  # the run takes more than two minutes: two slots skipped
    assert len(h.spawned) == 1
    skipped = h.events("skipped")
    assert [e["skipped_total"] for e in skipped] == [1, 2] and skipped[0]["reason"] == "still running"
    state = json.loads((tmp_path / "logs" / "schedule-state.json").read_text())
    assert state["skipped"] == {"full": 2}
    text = metrics_text(load_config(env={"BACKUP_DIR": str(tmp_path)}))
    assert 'seawall_backup_schedule_skipped_total{host=' in text and 'job="full"} 2' in text
    assert "seawall_backup_schedule_heartbeat_timestamp_seconds" in text
    h.spawned[0].code = 0
    h.run_for(60)
    finished = h.events("finished")
    assert finished[0]["job"] == "full" and finished[0]["exit_code"] == 0 and finished[0]["status"] == "ok"
    assert len(h.spawned) == 2  # runs again at its next time
    # the counters survive a restart of the scheduler
    again = Harness(tmp_path, jobs_of(full="* * * * *"), h.clock.now)
    assert again.scheduler.state["skipped"] == {"full": 2}


def test_jobs_that_lock_queue_behind_each_other_and_health_runs_beside(tmp_path):
    h = Harness(tmp_path, jobs_of(full="0 2 * * *", cleanup="0 2 * * *", health="0 2 * * *"),
                datetime(2026, 6, 1, 1, 59, 30, tzinfo=UTC))
    h.scheduler.start()
    h.run_for(40)
    names = [p.arguments[2] for p in h.spawned]
    assert names == ["create", "health"]  # cleanup waits for the full backup's lock
    h.spawned[0].code = 0
    h.run_for(2)
    assert [p.arguments[2] for p in h.spawned] == ["create", "health", "cleanup"]


def test_restart_after_missed_runs_catches_up_once_per_job(tmp_path):
    now = datetime(2026, 6, 1, 12, 30, tzinfo=UTC)
    os.makedirs(tmp_path / "logs", mode=0o700)
    for job, command, kind, started in (("create-full", "create", "full", "2026-05-20T02:00:00.000000Z"),
                                        ("cleanup", "cleanup", None, "2026-06-01T12:29:00.000000Z")):
        write_run(str(tmp_path / "logs"), {"job": job, "command": command, "kind": kind, "status": "ok",
                                           "started_at": started})
    h = Harness(tmp_path, jobs_of(full="0 2 * * *", cleanup="0 * * * *", health="0 * * * *"), now)
    h.scheduler.start()
    caught = h.events("catching-up")
    assert [(e["job"], e["missed"]) for e in caught] == [("full", "2026-06-01T02:00:00.000000Z")]  # 12 missed: 1 run
    assert [e["job"] for e in h.events("caught-up")] == ["full"]
    # health never ran (no record): no catch-up; cleanup ran after its last time: none either
    assert len(h.spawned) == 1


def test_stop_gives_grace_then_sigterm_then_sigkill(tmp_path, monkeypatch):
    sent = []

    def killpg(pid, signum):
        sent.append(signum)
        process = next(p for p in h.spawned if p.pid == pid)
        process.send_signal(signum)

    monkeypatch.setattr(sched.os, "killpg", killpg)
    h = Harness(tmp_path, jobs_of(full="* * * * *", schema="* * * * *"), datetime(2026, 6, 1, 12, 0, 59, tzinfo=UTC))
    h.scheduler.start()
    h.run_for(2)
    assert len(h.spawned) == 1 and h.scheduler.queue == ["schema"]
    h.spawned[0].obeys = False  # ignores SIGTERM: killed

    def sleep(seconds):
        h.clock.advance(seconds)

    h.scheduler.stop(5, sleep)
    assert sent == [signal.SIGTERM, signal.SIGKILL]
    assert [e["job"] for e in h.events("cancelled")] == ["schema"]
    assert h.events("finished")[-1]["exit_code"] == -signal.SIGKILL
    assert len(h.spawned) == 1  # the queued job never started


def test_a_job_that_finishes_within_its_grace_is_not_signalled(tmp_path, monkeypatch):
    monkeypatch.setattr(sched.os, "killpg", lambda pid, signum: pytest.fail("signalled"))
    h = Harness(tmp_path, jobs_of(full="* * * * *"), datetime(2026, 6, 1, 12, 0, 59, tzinfo=UTC))
    h.scheduler.start()
    h.run_for(2)

    def sleep(seconds):
        h.clock.advance(seconds)
        if h.clock.mono > 1010:
            h.spawned[0].code = 0

    h.scheduler.stop(60, sleep)
    assert h.events("finished")[-1]["exit_code"] == 0


def test_jitter_delays_each_run_within_its_bound(tmp_path):
    h = Harness(tmp_path, jobs_of(full="0 * * * *"), datetime(2026, 6, 1, 12, 59, tzinfo=UTC), jitter=300)
    h.scheduler.start()
    slot = h.scheduler.slots["full"]
    assert slot.due == datetime(2026, 6, 1, 13, tzinfo=UTC)
    assert slot.due <= slot.fire_at <= slot.due + timedelta(seconds=300)


def test_sighup_reload_takes_new_schedules_and_keeps_the_old_on_a_bad_config(tmp_path):
    h = Harness(tmp_path, jobs_of(full="0 2 * * *"), datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    signals = Signals()
    answers = [ConfigError("config file x is not valid JSON: line 1 column 1: Expecting value"),
               (jobs_of(full="*/5 * * * *", health="* * * * *"), UTC, 0)]
    ticks = []

    def reload():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def sleep(seconds):
        h.clock.advance(seconds)
        ticks.append(seconds)
        if len(ticks) in (1, 2):
            signals.reload = True
        if len(ticks) == 4:
            signals.stop = True

    assert run_loop(h.scheduler, reload, 5, signals, sleep) == 0
    failed = h.events("reload-failed")
    assert len(failed) == 1 and "not valid JSON" in failed[0]["error"]
    assert {e["job"]: e["next"] for e in h.events("scheduled")[-2:]} == {
        "full": "2026-06-01T12:05:00.000000Z", "health": "2026-06-01T12:01:00.000000Z"}
    assert h.events()[-1]["event"] == "stopped"


# --------------------------------------------------------------------------- the job table

def test_the_engine_table_follows_the_configuration():
    cfg = load_config(env={"BACKUP_SCHEDULE_FULL": "15 1 * * *", "BACKUP_SCHEDULE_HEALTH": "*/5 * * * *"})
    jobs = {j.name: j for j in config_jobs(cfg)}
    assert list(jobs) == list(JOBS)
    assert jobs["full"].schedule == "15 1 * * *" and jobs["full"].enabled
    assert jobs["health"].schedule == "*/5 * * * *" and not jobs["health"].locks
    assert jobs["verify"].arguments == ["verify", "latest", "--level", "archive"] and jobs["verify"].enabled
    assert not jobs["incremental"].enabled and not jobs["base"].enabled  # no WAL archive
    assert config_jobs(cfg, archiving=True)[2].enabled  # incremental where WAL is archived


def test_the_engine_table_reads_the_json_document(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"backup": {"types": {"schema": {"enabled": False}, "data": {"schedule": "0 5 * * *"}},
                                           "verify": {"schedule": "0 4 * * 6"},
                                           "monitoring": {"healthChecks": {"enabled": False}}}}))
    jobs = {j.name: j for j in config_jobs(load_config(env={}, config_file=str(path)))}
    assert not jobs["schema"].enabled and jobs["data"].enabled and jobs["data"].schedule == "0 5 * * *"
    assert jobs["verify"].schedule == "0 4 * * 6" and not jobs["health"].enabled


def test_the_table_agrees_with_the_roles_filter_inputs():
    """The same document through the roles' inputs (schedule_jobs) and through Config: the same kinds' jobs."""
    document = {"backup": {"types": {"full": {"schedule": "0 1 * * *"}, "schema": {"enabled": False}},
                           "cleanup": {"schedule": "0 4 * * 0"}}}
    from_role = {j.name: (j.enabled, j.schedule) for j in job_table(
        {"full": "0 2 * * *", "schema": "0 3 * * 1", "cleanup": "0 3 * * 0", "verify": "30 3 * * *",
         "health": "*/15 * * * *"}, document)}
    cfg = load_config(env={})
    from seawall_pgbackup.config.settings import apply_json
    apply_json(cfg, document, "test")
    from_config = {j.name: (j.enabled, j.schedule) for j in config_jobs(cfg)}
    for name in ("full", "schema", "cleanup", "verify", "health"):
        assert from_role[name] == from_config[name], name


@pytest.mark.parametrize("schedules,document", [
    ({"full": "0 2 * * *", "schema": "0 3 * * 1", "cleanup": "0 3 * * 0", "verify": "30 3 * * *",
      "health": "*/15 * * * *"}, {}),
    ({"full": "0 1 * * *", "schema": "", "cleanup": "", "verify": "", "health": "*/5 * * * *", "data": "0 6 * * *"},
     {"backup": {"types": {"full": {"schedule": "15 1 * * *"}}, "monitoring": {"healthChecks": {"enabled": False}}}}),
])
def test_a_role_managed_hosts_config_json_gives_schedule_the_roles_jobs(schedules, document, tmp_path):
    """config.json written by the tooling role (backup_config over schedule_jobs) makes `schedule` run exactly the
    jobs the timers would, also the ones the role turns off (written as false)."""
    import sys
    from pathlib import Path
    collections = str(Path(__file__).resolve().parents[2] / ".collections")
    if collections not in sys.path:
        sys.path.insert(0, collections)
    from ansible_collections.seawall.pgbackup.plugins.filter.backup_config import backup_config
    from ansible_collections.seawall.pgbackup.plugins.filter.schedule_jobs import schedule_jobs

    role_jobs = schedule_jobs(schedules, config=document)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(backup_config(document, role_jobs)))
    engine = {j.name: (j.enabled, j.schedule if j.enabled else "", j.arguments)
              for j in config_jobs(load_config(env={}, config_file=str(path)))}
    for job in role_jobs:
        if job["name"] in ("base", "incremental"):
            continue  # where WAL is archived (the repository's wal/), as the roles decide with pgbackup_wal_archive
        assert engine[job["name"]] == (job["enabled"], job["schedule"] if job["enabled"] else "", job["arguments"]), job


def test_previous_run_from_the_repeated_hours_second_pass_finds_the_first_pass():
    # 02:50 CEST (00:50 UTC) ran; at 02:10 CET (01:10 UTC) that is the last run, not yesterday's
    assert previous_run(Cron("50 2 * * *"), datetime(2026, 10, 25, 1, 10, tzinfo=UTC), BERLIN) == \
        datetime(2026, 10, 25, 0, 50, tzinfo=UTC)
    assert next_run(Cron("* * * * *"), datetime(2026, 10, 25, 1, 0, tzinfo=UTC), BERLIN) == \
        datetime(2026, 10, 25, 1, 1, tzinfo=UTC)  # the second pass goes on (systemd-analyze agrees)


def test_the_scheduler_s_server_answers_with_the_reloaded_configuration(tmp_path):
    """schedule --serve: after a SIGHUP reload /metrics and /healthz use the new settings (here the full backup's
    schedule, whose interval /metrics shows), not the ones the server started with."""
    import urllib.request

    from seawall_pgbackup.cli.serve import make_server, serve_in_thread
    from seawall_pgbackup.config.monitoring import load_monitoring
    from tests.support.pgcluster import free_port

    def config(schedule: str):
        cfg = load_config(env={"BACKUP_DIR": str(tmp_path), "BACKUP_SCHEDULE_FULL": schedule})
        return cfg, load_monitoring(cfg.monitoring, {})

    served = [config("0 2 * * *")]
    port = free_port()
    server = make_server(served[0][0], served[0][1], "127.0.0.1:%d" % port, current=lambda: served[0])
    serve_in_thread(server)

    def interval() -> str:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as response:
            lines = response.read().decode("utf-8").splitlines()
        return [line.split()[-1] for line in lines
                if line.startswith("seawall_backup_schedule_interval_seconds{") and 'kind="full"' in line][0]

    try:
        assert float(interval()) == 86400
        served[0] = config("0 * * * *")
        assert float(interval()) == 3600
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("text", ['{"skipped": {"full": Infinity}}', '{"skipped": {"full": "many"}}', '[1, 2]',
                                  '{"skipped": {"full": 1}, "heartbeat": 12}', 'not json'])
def test_a_malformed_state_file_restarts_the_counters_and_never_stops_the_scheduler(tmp_path, text):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "schedule-state.json").write_text(text)
    h = Harness(tmp_path, jobs_of(full="* * * * *"), datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC))
    assert h.scheduler.state["skipped"] in ({}, {"full": 1})
    text = metrics_text(load_config(env={"BACKUP_DIR": str(tmp_path)}))  # the metrics file is still written
    assert "seawall_backup_metrics_generated_timestamp_seconds" in text
