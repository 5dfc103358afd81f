"""A backup taken through Ansible is monitored exactly like a timer's: issue #10.

The same real PostgreSQL 15 database is backed up once by the ``seawall.pgbackup.pg_backup`` module through
``ansible-playbook`` (what an AWX job runs) and once by ``python -m seawall_pgbackup.cli.run create`` (what the timer
runs), with one configuration: a webhook notification on success and a metrics textfile directory. The run
records, the metric names with their label sets and the notifications must be the same apart from what
differs between two runs (times, duration, pid, backup id). A failing run is recorded and notified the same
way from both front ends too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Set, Tuple

import pytest

from seawall_pgbackup.core.errors import ConnectionFailed
from tests.integration import cli
from tests.support import load_sample
from tests.support.pgcluster import free_port
from tests.support.receivers import HttpReceiver

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
RUN_VARYING = {"started_at", "finished_at", "duration_seconds", "pid", "summary"}
EVENT_VARYING = RUN_VARYING | {"log_excerpt"}
PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Run the module
      seawall.pgbackup.%s:
        database_url: "{{ url }}"
        backup_dir: "{{ dir }}"
        config_file: "{{ config }}"
        %s
      register: taken
"""


@pytest.fixture(name="db")
def _db(pg15):
    name = "front_%d" % os.getpid()
    load_sample(pg15, name)
    yield {"cluster": pg15, "name": name, "url": pg15.url(name)}
    pg15.drop_db(name)


@pytest.fixture(name="hook")
def _hook():
    with HttpReceiver() as http:
        yield http


def _config(tmp_path: Path, http: HttpReceiver, on_success: bool = True) -> str:
    textfile = tmp_path / "textfile"
    textfile.mkdir(exist_ok=True)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"backup": {"monitoring": {
        "alerts": {"onSuccess": on_success, "webhooks": [{"url": http.url("/hook")}]},
        "metrics": {"textfileDir": str(textfile)},
    }}}))
    return str(path)


def _playbook(tmp_path: Path, url: str, backup_dir: Path, config: str, options: str = "force: true",
              *extra: str, module: str = "pg_backup") -> Tuple[subprocess.CompletedProcess, Dict[str, Any]]:
    """ansible-playbook with the variables in a 0600 file (the URL holds a password: never in argv)."""
    if not ANSIBLE_PLAYBOOK.exists():
        if os.environ.get("CI"):
            pytest.fail("ansible-playbook is missing beside %s" % sys.executable, pytrace=False)
        pytest.skip("ansible-playbook is not installed beside this Python")
    playbook = tmp_path / "backup.yml"
    playbook.write_text(PLAYBOOK % (module, options))
    variables = tmp_path / "vars.json"
    variables.write_text(json.dumps({"url": url, "dir": str(backup_dir), "config": config,
                                     "ansible_python_interpreter": sys.executable}))
    variables.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "BACKUP_", "DATABASE_URL", "ANSIBLE_"))}
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c", "local", str(playbook),
                           "-e", "@%s" % variables, *extra], cwd=str(REPO), env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    try:
        task = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        raise AssertionError("no task result from ansible-playbook (%d):\n%s\n%s"
                             % (proc.returncode, proc.stdout[-4000:], proc.stderr[-3000:])) from None
    return proc, task


def _record(backup_dir: Path, job: str = "create-full") -> Dict[str, Any]:
    return json.loads((backup_dir / "logs" / ("last-run-%s.json" % job)).read_text())


def _series(tmp_path: Path) -> Set[Tuple[str, str]]:
    """(metric name, label set) of every sample in the textfile: what a dashboard or alert rule selects."""
    text = (tmp_path / "textfile" / "seawall_pgbackup.prom").read_text()
    series = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            match = re.match(r"([a-z_:]+)\{(.*)\} \S+$", line)
            assert match, line
            series.add((match.group(1), match.group(2)))
    return series


def _without(document: Dict[str, Any], keys: Set[str]) -> Dict[str, Any]:
    return {k: v for k, v in document.items() if k not in keys}


def test_module_and_timer_backups_are_monitored_the_same(db, hook, tmp_path):
    backup_dir = tmp_path / "backups"
    config = _config(tmp_path, hook)
    textfile = tmp_path / "textfile" / "seawall_pgbackup.prom"

    proc, task = _playbook(tmp_path, db["url"], backup_dir, config)
    assert proc.returncode == 0 and task["changed"] is True, task
    module_backup = task["backup"]["id"]
    module_record = _record(backup_dir)
    module_series = _series(tmp_path)
    assert len(hook.at("/hook")) == 1, "the module's run sent no notification"
    module_event = json.loads(hook.at("/hook")[0]["body"])
    textfile.unlink()

    manifest = cli.create(cli.cli_env(db["url"], backup_dir, BACKUP_CONFIG=config), "full")
    timer_record = _record(backup_dir)
    timer_series = _series(tmp_path)
    assert len(hook.at("/hook")) == 2
    timer_event = json.loads(hook.at("/hook")[1]["body"])

    assert manifest["id"] != module_backup
    assert (module_record["status"], module_record["command"], module_record["kind"], module_record["database"],
            module_record["exit_code"]) == ("ok", "create", "full", db["name"], 0)
    assert sorted(module_record) == sorted(timer_record)
    assert _without(module_record, RUN_VARYING) == _without(timer_record, RUN_VARYING)
    # the summary names each run's own backup
    assert module_record["summary"].startswith("backup %s: " % module_backup)
    assert timer_record["summary"].startswith("backup %s: " % manifest["id"])

    assert [labels for name, labels in module_series if name == "seawall_backup_last_run_success"] == \
        ['database="%s",host="%s",job="create-full",kind="full"' % (db["name"], module_record["host"])]
    assert module_series == timer_series

    assert module_event["event"] == "create-ok" and module_event["database"] == db["name"]
    assert sorted(module_event) == sorted(timer_event)
    assert _without(module_event, EVENT_VARYING) == _without(timer_event, EVENT_VARYING)
    assert module_backup in module_event["log_excerpt"] and manifest["id"] in timer_event["log_excerpt"]


def test_a_failed_module_backup_is_recorded_and_notified_like_a_timers(hook, tmp_path):
    backup_dir = tmp_path / "backups"
    config = _config(tmp_path, hook, on_success=False)
    unreachable = "postgresql://nobody@127.0.0.1:%d/gone" % free_port()
    (backup_dir / "logs").mkdir(parents=True)  # an existing repository: "running" is recorded first

    proc, task = _playbook(tmp_path, unreachable, backup_dir, config)
    assert proc.returncode != 0 and task.get("failed") is True, task
    assert task["step"] == "connect" and "Connection refused" in task["msg"], task
    module_record = _record(backup_dir)
    assert len(hook.at("/hook")) == 1, "the module's failure sent no notification"
    module_event = json.loads(hook.at("/hook")[0]["body"])

    timer = cli.run(["create", "--type", "full"], cli.cli_env(unreachable, backup_dir, BACKUP_CONFIG=config),
                    check=False)
    assert timer.returncode == ConnectionFailed.exit_code == 5, timer.stderr
    timer_record = _record(backup_dir)
    assert len(hook.at("/hook")) == 2
    timer_event = json.loads(hook.at("/hook")[1]["body"])

    assert (module_record["status"], module_record["step"], module_record["exit_code"]) == ("failed", "connect", ConnectionFailed.exit_code)
    assert module_record["error"].endswith("Connection refused")  # task["msg"]: the URL masked by no_log
    assert _without(module_record, RUN_VARYING) == _without(timer_record, RUN_VARYING)
    assert (module_event["event"], module_event["status"], module_event["step"]) == ("create-failed", "failed",
                                                                                     "connect")
    assert module_event["hint"] and "Connection refused" in module_event["error"]
    assert _without(module_event, EVENT_VARYING) == _without(timer_event, EVENT_VARYING)


def test_check_mode_and_a_fresh_backup_are_plans_not_runs(db, hook, tmp_path):
    """Nothing taken, nothing recorded, nobody notified: only a run that takes a backup is monitored."""
    backup_dir = tmp_path / "backups"
    config = _config(tmp_path, hook)
    check, planned = _playbook(tmp_path, db["url"], backup_dir, config, "max_age: 20h", "--check", "--diff")
    assert check.returncode == 0 and planned["changed"] is True and planned["backup"] is None, planned
    assert planned["diff"] == {"before": {"newest_backup": None},
                               "after": {"newest_backup": "(a new full backup of %s)" % db["name"]}}
    assert not backup_dir.exists() and hook.requests == []

    _taken_proc, taken = _playbook(tmp_path, db["url"], backup_dir, config, "max_age: 20h")
    assert taken["changed"] is True and taken["skipped_reason"] is None
    record = _record(backup_dir)
    assert len(hook.at("/hook")) == 1

    _skip_proc, skipped = _playbook(tmp_path, db["url"], backup_dir, config, "max_age: 20h")
    assert skipped["changed"] is False and skipped["backup"]["id"] == taken["backup"]["id"]
    assert skipped["skipped_reason"].startswith("a good full backup of %s (%s) is " % (db["name"],
                                                                                       taken["backup"]["id"]))
    assert skipped["skipped_reason"].endswith(" old, younger than max_age 20h")
    assert skipped["restore_command"] == taken["restore_command"] == (
        "seawall-pgbackup --backup-dir %s restore %s --target-url postgresql://USER@HOST:PORT/NEWDB --with-globals"
        % (backup_dir, taken["backup"]["id"]))
    assert _record(backup_dir) == record and len(hook.at("/hook")) == 1


def test_retention_and_health_modules_are_recorded_like_their_timers(db, hook, tmp_path):
    backup_dir = tmp_path / "backups"
    config = _config(tmp_path, hook)
    _playbook(tmp_path, db["url"], backup_dir, config)
    _proc, check = _playbook(tmp_path, db["url"], backup_dir, config, "timezone: UTC", "--check",
                             module="pg_backup_retention")
    assert check["changed"] is False and [d["action"] for d in check["plan"]] == ["keep"]
    assert not (backup_dir / "logs" / "last-run-cleanup.json").exists()  # a plan is not a run

    _proc, cleanup = _playbook(tmp_path, db["url"], backup_dir, config, "timezone: UTC",
                               module="pg_backup_retention")
    assert cleanup["changed"] is False and "dry_run" not in cleanup
    record = _record(backup_dir, "cleanup")
    assert (record["command"], record["status"], record["exit_code"]) == ("cleanup", "ok", 0)
    assert [json.loads(r["body"])["event"] for r in hook.at("/hook")] == ["create-ok", "cleanup-ok"]

    _proc, health = _playbook(tmp_path, db["url"], backup_dir, config, "fail_on: never", module="pg_backup_health")
    record = _record(backup_dir, "health")
    assert (record["command"], record["exit_code"]) == ("health", health["exit_code"])
    assert record["status"] == health["status"]
    assert ("seawall_backup_health_status", 'host="%s"' % record["host"]) in _series(tmp_path)
