"""``seawall-pgbackup schedule`` for real (issue #15): a per-minute full backup against PostgreSQL 15, a reload
on SIGHUP, an overlap skipped and counted in /metrics, /livez, and SIGTERM during a run leaving no listed
partial backup. One test function doing the sequence (about three minutes: the schedule is per minute)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List

import pytest

from tests.integration import cli
from tests.support import load_sample
from tests.support.pgcluster import free_port

NEVER = "0 0 1 1 *"  # the other jobs stay out of the way (New Year's midnight)


class Scheduler:
    """The command in the background, its stdout events collected as they come."""

    def __init__(self, env: Dict[str, str], tmp: Path, *args: str) -> None:
        self.stderr = open(tmp / ("scheduler-%d.err" % time.monotonic_ns()), "w+", encoding="utf-8")
        self.proc = subprocess.Popen(cli.COMMAND + ["schedule", "--log-format", "json", *args], env=env,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True, stdin=subprocess.DEVNULL)
        self.events: List[Dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.events.append(json.loads(line))  # every stdout line is one JSON object

    def wait_for(self, predicate, timeout: float, what: str) -> Dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in list(self.events) if predicate(e)]
            if found:
                return found[-1]
            assert self.proc.poll() is None, "the scheduler ended (%s): %s" % (self.proc.returncode, self.log())
            time.sleep(0.2)
        raise AssertionError("no %s within %ds: %s" % (what, timeout, self.log()))

    def stop(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def log(self) -> str:
        self.stderr.seek(0)
        return "events %s\nstderr %s" % (json.dumps(self.events), self.stderr.read()[-3000:])


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")


@pytest.fixture(name="db")
def _db(pg15):
    name = "sched_%d" % os.getpid()
    load_sample(pg15, name)
    yield pg15.url(name)
    pg15.drop_db(name)


def test_the_foreground_scheduler_runs_skips_reloads_and_stops_cleanly(db, tmp_path):
    backups = tmp_path / "backups"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"backup": {"types": {"schema": {"schedule": NEVER}}}}))
    env = cli.cli_env(db, str(backups), BACKUP_CONFIG=str(config), BACKUP_SCHEDULE_FULL="* * * * *",
                      BACKUP_SCHEDULE_CLEANUP=NEVER, BACKUP_SCHEDULE_VERIFY=NEVER, BACKUP_SCHEDULE_HEALTH=NEVER)

    # 1. A per-minute full backup is taken within ~70 s of the start, through the run hook (run record).
    first = Scheduler(env, tmp_path)
    started = time.monotonic()
    planned = {e["job"]: e for e in first.wait_for(lambda e: e["event"] == "scheduled", 10, "plan") and first.events
               if e["event"] == "scheduled"}
    assert set(planned) == {"full", "schema", "cleanup", "verify", "health"}, planned
    assert planned["full"]["schedule"] == "* * * * *" and planned["full"]["next"].endswith(":00.000000Z")
    done = first.wait_for(lambda e: e["event"] == "finished" and e["job"] == "full", 75, "full backup")
    assert done["exit_code"] == 0 and done["status"] == "ok" and time.monotonic() - started < 75
    listed = cli.listing(env)
    assert [b["type"] for b in listed] == ["full"]
    record = json.loads((backups / "logs" / "last-run-create-full.json").read_text())
    assert record["status"] == "ok"

    # 2. SIGHUP: a broken configuration is refused in one line and the running one kept; a good one is taken.
    config.write_text("{not json")
    first.proc.send_signal(signal.SIGHUP)
    refused = first.wait_for(lambda e: e["event"] == "reload-failed", 10, "refused reload")
    assert "not valid JSON" in refused["error"] and "\n" not in refused["error"]
    config.write_text(json.dumps({"backup": {"types": {"schema": {"schedule": "0 4 * * *"}}}}))
    first.proc.send_signal(signal.SIGHUP)
    first.wait_for(lambda e: e["event"] == "scheduled" and e["job"] == "schema" and e["schedule"] == "0 4 * * *",
                   10, "reloaded schema schedule")
    assert first.stop() == 0
    assert first.events[-1]["event"] == "stopped"

    # 3. Runs that hang at the manifest step (the engine's test point): the next minute's run is skipped and
    #    counted; SIGTERM then stops the running one after the grace, and no partial backup is listed.
    marker = tmp_path / "paused"
    port = free_port()
    slow = dict(env, SEAWALL_TEST_PAUSE="create-manifest", SEAWALL_TEST_PAUSE_FILE=str(marker),
                SEAWALL_TEST_PAUSE_SECONDS="600")
    second = Scheduler(slow, tmp_path, "--serve", "127.0.0.1:%d" % port, "--grace", "2")
    second.wait_for(lambda e: e["event"] == "serving", 10, "server")
    status, body = get("http://127.0.0.1:%d/livez" % port)
    assert status == 200 and body == "ok\n"
    second.wait_for(lambda e: e["event"] == "started" and e["job"] == "full", 65, "second run")
    skipped = second.wait_for(lambda e: e["event"] == "skipped", 65, "skipped run")
    assert skipped["job"] == "full" and skipped["skipped_total"] == 1 and skipped["reason"] == "still running"
    assert marker.read_text().splitlines() == ["create-manifest"]  # the run is held in the middle
    status, metrics = get("http://127.0.0.1:%d/metrics" % port)
    assert status == 200
    assert any(line.startswith("seawall_backup_schedule_skipped_total{") and 'job="full"' in line
               and line.endswith(" 1") for line in metrics.splitlines()), metrics
    assert "seawall_backup_schedule_heartbeat_timestamp_seconds{" in metrics
    assert get("http://127.0.0.1:%d/healthz" % port)[0] in (200, 503)
    assert second.stop() == 0, second.log()
    events = [e["event"] for e in second.events]
    assert events[-4:] == ["stopping", "terminating", "finished", "stopped"], second.log()
    interrupted = [e for e in second.events if e["event"] == "finished"][-1]
    assert interrupted["job"] == "full" and interrupted["exit_code"] == 130, second.log()
    assert [b["id"] for b in cli.listing(env)] == [b["id"] for b in listed]  # the partial one is not listed
    record = json.loads((backups / "logs" / "last-run-create-full.json").read_text())
    assert record["status"] == "failed" and record["exit_code"] == 130
