"""roles/monitoring's assets: alert rules (promtool check + unit tests), the Grafana dashboard's structure,
every metric they use exists in what metrics.py writes, and the role itself (rendered, idempotent, wiring check).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from seawall_pgbackup.observe.metrics import METRICS, PREFIX, metric_names
from tests.integration.test_roles import ANSIBLE_PLAYBOOK, REPO, SYSTEMD_ANALYZE, run_playbook, stats

ROLE = REPO / "roles" / "monitoring"
RULES = ROLE / "files" / "seawall-pgbackup.rules.yml"
DASHBOARD = ROLE / "files" / "grafana-dashboard.json"
RULE_TESTS = Path(__file__).resolve().parent / "monitoring" / "rules.test.yml"
METRIC = re.compile(r"\b(seawall_backup_[a-z_]+)\b")


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI (Debian package prometheus, make system-deps)", pytrace=False)
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return found


def test_rules_pass_promtool_check_and_unit_tests():
    tool = promtool()
    checked = subprocess.run([tool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0 and "SUCCESS: 13 rules found" in checked.stdout, checked.stdout + checked.stderr
    tested = subprocess.run([tool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, check=False,
                            cwd=RULE_TESTS.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = set(re.findall(r"alert: (\w+)", RULES.read_text()))
    assert alerts == set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text())), "every alert has a unit test"


def test_rules_and_dashboard_use_only_metrics_that_exist():
    written = set(metric_names())
    for path in (RULES, DASHBOARD):
        used = set(METRIC.findall(path.read_text()))
        assert used and used <= written, "%s uses unknown metrics: %s" % (path.name, sorted(used - written))
    assert len(METRICS) == len(written)
    assert all(name.startswith(PREFIX) for name in written)


def test_dashboard_structure():
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "seawall-pgbackup" and re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", board["uid"])
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert board["title"] and board["time"]["from"].startswith("now-")
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["host"]["type"] == "query" and variables["host"]["datasource"]["uid"] == "${datasource}"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) >= 8
    cells = set()
    for panel in board["panels"]:
        assert panel["type"] in ("stat", "timeseries", "table", "gauge", "bargauge") and panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"} and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        for row in range(grid["y"], grid["y"] + grid["h"]):  # no two panels overlap
            for col in range(grid["x"], grid["x"] + grid["w"]):
                assert (row, col) not in cells, panel["title"]
                cells.add((row, col))
        assert panel["targets"]
        for target in panel["targets"]:
            assert target["refId"] and target["expr"] and "$host" in target["expr"]
            assert target["datasource"]["uid"] == "${datasource}"


def test_role_renders_idempotently_and_checks_the_wiring(tmp_path):
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip("make setup-dev first (ansible-playbook in .venv)")
    promtool()
    root = tmp_path / "root"
    root.mkdir()
    first = run_playbook(REPO / "tests" / "integration" / "roles" / "render_monitoring.yml", "-e", "render_root=%s" % root)
    assert stats(first)["changed"] >= 5
    assert stats(run_playbook(REPO / "tests" / "integration" / "roles" / "render_monitoring.yml", "-e",
                              "render_root=%s" % root, "-e", "render_wiring=false"))["changed"] == 0
    textfile = root / "var/lib/prometheus/node-exporter"
    assert textfile.is_dir() and oct(textfile.stat().st_mode & 0o777) == "0o755"
    assert (root / "etc/prometheus/rules/seawall-pgbackup.rules.yml").read_text() == RULES.read_text()
    assert json.loads((root / "var/lib/grafana/dashboards/seawall-pgbackup.json").read_text())["uid"] == "seawall-pgbackup"
    unit = root / "etc/systemd/system/seawall-pgbackup.service"
    text = unit.read_text()
    assert "ExecStart=/opt/seawall-pgbackup/bin/seawall-pgbackup serve --listen 127.0.0.1:9187" in text
    assert "ReadOnlyPaths=/var/backups/postgresql" in text and "User=root" in text
    if os.path.exists(SYSTEMD_ANALYZE):
        verify = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True,
                                check=False)
        assert "Unknown key" not in verify.stderr and "Unknown section" not in verify.stderr, verify.stderr

    secrets = root / "etc/seawall-pgbackup/secrets.env"
    assert "BACKUP_SLACK_WEBHOOK_URL='https://hooks.slack.test/T0/B0/render-token'" in secrets.read_text()
    assert "BACKUP_SMTP_PASSWORD='render-smtp-password'" in secrets.read_text()
    assert oct(secrets.stat().st_mode & 0o777) == "0o600"
    config = json.loads((root / "etc/seawall-pgbackup/config.json").read_text())
    assert config["backup"]["monitoring"]["metrics"]["textfileDir"] == str(textfile)
    assert "render-token" not in json.dumps(config) and "render-token" not in first.stdout
    full = (root / "etc/systemd/system/seawall-pgbackup-full.service").read_text()
    assert "ReadWritePaths=/var/backups/postgresql %s\n" % textfile in full

    # check mode: turning serve off would remove its unit (one change), and nothing is touched
    off = run_playbook(REPO / "tests" / "integration" / "roles" / "render_monitoring.yml", "-e", "render_root=%s" % root,
                       "-e", "render_serve=false", "-e", "render_wiring=false", "--check")
    assert stats(off)["changed"] == 1 and unit.read_text() == text

    wrong = run_playbook(REPO / "tests" / "integration" / "roles" / "render_monitoring.yml", "-e", "render_root=%s" % root,
                         "-e", "render_configured_dir=/somewhere/else", "-e", "render_wiring=false", check=False)
    assert wrong.returncode != 0
    assert "The jobs write metrics to pgbackup_config.backup.monitoring.metrics.textfileDir (/somewhere/else)" in wrong.stdout
