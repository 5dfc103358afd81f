"""Notifications, dead-man's-switch pings, metrics and ``serve`` against real local receivers and PostgreSQL 15.

Every channel is a real server started here: aiosmtpd (AUTH after STARTTLS, self-signed certificate),
an HTTP receiver for Slack, Discord, the HMAC-signed custom webhook and the dead-man's switch.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.integration import cli
from tests.support import load_sample
from tests.support.pgcluster import free_port
from tests.support.receivers import HttpReceiver, SmtpReceiver, check_hmac

SECRET = "hmac-shared-secret"
SMTP_PASSWORD = "s3cret-smtp"


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("%s is missing in CI (requirements-dev.txt)" % module, pytrace=False)
        pytest.skip("%s is not installed" % module)


@pytest.fixture(name="repo")
def _repo(pg15, tmp_path):
    name = "mon_%d" % os.getpid()
    load_sample(pg15, name)
    yield {"cluster": pg15, "db": name, "dir": tmp_path / "backups"}
    pg15.drop_db(name)


@pytest.fixture(name="receivers")
def _receivers(tmp_path):
    _require("aiosmtpd")
    with SmtpReceiver(str(tmp_path), password=SMTP_PASSWORD) as smtp, HttpReceiver(fail_paths=("/broken",)) as http:
        yield smtp, http


def _config(tmp_path, smtp: SmtpReceiver, http: HttpReceiver, **alerts) -> str:
    document = {"backup": {"monitoring": {
        "alerts": dict({
            "email": {"host": "127.0.0.1", "port": smtp.port, "security": "starttls", "username": "backup",
                      "from": "backup@example.test", "to": ["dba@example.test"], "cafile": smtp.cafile},
            "webhooks": [{"url": http.url("/hook"), "headers": {"X-Team": "db"}}],
        }, **alerts),
        "metrics": {"textfileDir": str(tmp_path / "textfile")},
    }}}
    (tmp_path / "textfile").mkdir(exist_ok=True)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document))
    return str(path)


def _env(repo, config: str, http: HttpReceiver, password=None, **extra):
    url = repo["cluster"].url(repo["db"], password=password) if password else repo["cluster"].url(repo["db"])
    return cli.cli_env(url, repo["dir"], BACKUP_CONFIG=config, BACKUP_SMTP_PASSWORD=SMTP_PASSWORD,
                       BACKUP_SLACK_WEBHOOK_URL=http.url("/slack/T000/B000/token"),
                       BACKUP_DISCORD_WEBHOOK_URL=http.url("/discord/123/token"),
                       BACKUP_WEBHOOK_SECRET=SECRET, BACKUP_DEADMANS_SWITCH_URL=http.url("/ping/uuid"), **extra)


def test_failed_backup_one_message_per_channel(repo, receivers, tmp_path):
    smtp, http = receivers
    env = _env(repo, _config(tmp_path, smtp, http), http, password="not-the-password")
    proc = cli.run(["create", "--type", "full"], env, check=False)
    assert proc.returncode == 5, proc.stderr  # unreachable (docs/errors.md)
    host = socket.gethostname()

    assert len(smtp.messages) == 1 and smtp.logins == ["backup"]
    mail = smtp.messages[0]
    body = mail.get_payload(decode=True).decode()
    assert mail["Subject"] == "[seawall-pgbackup] create-full FAILED on %s (%s)" % (host, repo["db"])
    assert mail["To"] == "dba@example.test"
    for text in ("host: %s" % host, "database: %s" % repo["db"], "kind: full",
                 'password authentication failed for user "postgres" (step connect)',
                 "what to do: Check that the server is up", "log excerpt:", "ERROR backup-failed type=full"):
        assert text in body, body

    slack = http.json_at("/slack/T000/B000/token")
    discord = http.json_at("/discord/123/token")
    hooks = http.at("/hook")
    assert len(slack) == 1 and len(discord) == 1 and len(hooks) == 1
    assert "database: %s" % repo["db"] in slack[0]["text"] and "step connect" in slack[0]["text"]
    assert "kind: full" in discord[0]["content"] and len(discord[0]["content"]) <= 2000
    hook = json.loads(hooks[0]["body"])
    assert (hook["event"], hook["status"], hook["kind"], hook["database"], hook["host"], hook["step"]) == \
        ("create-failed", "failed", "full", repo["db"], host, "connect")
    assert "password authentication failed" in hook["error"] and "backup-failed" in hook["log_excerpt"]
    assert hooks[0]["headers"]["x-team"] == "db"
    assert check_hmac(hooks[0], SECRET)
    assert not check_hmac(hooks[0], "another-secret")
    tampered = dict(hooks[0], body=hooks[0]["body"].replace(b"failed", b"ok"))
    assert not check_hmac(tampered, SECRET)

    assert [r["path"] for r in http.requests if r["path"].startswith("/ping")] == ["/ping/uuid/start", "/ping/uuid/fail"]
    assert b"password authentication failed" in http.at("/ping/uuid/fail")[0]["body"]

    everything = b"".join(r["body"] for r in http.requests) + mail.as_bytes()
    for secret in (b"not-the-password", SECRET.encode(), SMTP_PASSWORD.encode()):
        assert secret not in everything
    log = (repo["dir"] / "logs" / "backup.log").read_text()
    assert "token" not in log and SMTP_PASSWORD not in log
    assert log.count("INFO notified") == 4

    record = json.loads((repo["dir"] / "logs" / "last-run-create-full.json").read_text())
    assert (record["status"], record["step"], record["exit_code"]) == ("failed", "connect", 5)


def test_success_notifies_only_when_configured_and_bad_channels_never_fail(repo, receivers, tmp_path):
    smtp, http = receivers
    env = _env(repo, _config(tmp_path, smtp, http), http)
    cli.create(env, "full")
    assert smtp.messages == [] and [r["path"] for r in http.requests] == ["/ping/uuid/start", "/ping/uuid"]

    # onSuccess, every channel unreachable or refusing: the backup is good, exit 0, one warning per channel
    dead = "http://127.0.0.1:%d" % free_port()
    config = _config(tmp_path, smtp, http, onSuccess=True,
                     webhooks=[{"url": http.url("/broken")}, {"url": dead + "/hook", "name": "closed"}])
    document = json.loads(open(config).read())
    document["backup"]["monitoring"]["alerts"]["email"]["port"] = free_port()
    open(config, "w").write(json.dumps(document))
    bad = dict(env, BACKUP_SLACK_WEBHOOK_URL=dead + "/slack/token", BACKUP_DISCORD_WEBHOOK_URL=http.url("/broken"),
               BACKUP_DEADMANS_SWITCH_URL=dead + "/ping")
    proc = cli.run(["create", "--type", "full", "--json"], bad, check=False)
    assert proc.returncode == 0, proc.stderr
    assert len(cli.listing(env)) == 2
    log = (repo["dir"] / "logs" / "backup.log").read_text()
    warnings = [ln for ln in log.splitlines() if "WARNING notify-failed" in ln]
    channels = sorted(ln.split("channel=")[1].split()[0] for ln in warnings)
    assert channels == ["closed", "deadmans-switch", "deadmans-switch", "discord", "email", "slack", "webhook"]
    assert "HTTP 500" in log and "cannot connect" in log and "token" not in log

    # onSuccess with working channels: exactly one success message each, with the backup's id
    http.requests.clear()
    ok = _config(tmp_path, smtp, http, onSuccess=True)
    proc = cli.run(["create", "--type", "full", "--json"], dict(env, BACKUP_CONFIG=ok), check=False)
    assert proc.returncode == 0
    backup_id = json.loads(proc.stdout)["id"]
    assert len(smtp.messages) == 1 and "succeeded" in smtp.messages[0]["Subject"]
    assert backup_id in smtp.messages[0].get_payload(decode=True).decode()
    assert len(http.at("/slack/T000/B000/token")) == 1 and len(http.at("/discord/123/token")) == 1
    assert json.loads(http.at("/hook")[0]["body"])["event"] == "create-ok"


def test_metrics_file_and_serve(repo, receivers, tmp_path):
    parser = _require("prometheus_client.parser")
    smtp, http = receivers
    env = _env(repo, _config(tmp_path, smtp, http), http)
    backup = cli.create(env, "full")
    cli.run(["verify", "latest"], env)
    failed = cli.run(["create", "--type", "schema"], dict(env, DATABASE_URL=repo["cluster"].url(repo["db"], password="x")),
                     check=False)
    assert failed.returncode == 5  # unreachable

    text = (tmp_path / "textfile" / "seawall_pgbackup.prom").read_text()
    assert oct(os.stat(tmp_path / "textfile" / "seawall_pgbackup.prom").st_mode & 0o777) == "0o644"
    assert not [p for p in os.listdir(tmp_path / "textfile") if p != "seawall_pgbackup.prom"]  # no temp file left
    samples = _samples(parser, text)
    db = repo["db"]
    finished = samples[("seawall_backup_last_success_timestamp_seconds", (("database", db), ("kind", "full")))]
    assert abs(finished - _epoch(backup["finished_at"])) < 0.01
    assert samples[("seawall_backup_last_size_bytes", (("database", db), ("kind", "full")))] == \
        sum(f["size"] for f in backup["files"])
    assert samples[("seawall_backup_verification_success", (("database", db), ("kind", "full")))] == 1
    assert samples[("seawall_backup_last_run_success", (("database", db), ("job", "create-full"), ("kind", "full")))] == 1
    assert samples[("seawall_backup_last_run_success", (("database", db), ("job", "create-schema"), ("kind", "schema")))] == 0
    assert samples[("seawall_backup_last_run_success", (("database", db), ("job", "verify"), ("kind", "")))] == 1
    assert samples[("seawall_backup_schedule_interval_seconds", (("kind", "full"),))] == 86400
    assert samples[("seawall_backup_disk_free_bytes", ())] > 0

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "seawall_pgbackup.cli.run", "serve", "--listen",
                               "127.0.0.1:%d" % port], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        body = _get("http://127.0.0.1:%d/metrics" % port)
        served = _samples(parser, body[1])
        assert body[0] == 200 and served[("seawall_backup_last_size_bytes", (("database", db), ("kind", "full")))] == \
            samples[("seawall_backup_last_size_bytes", (("database", db), ("kind", "full")))]
        code, health = _get("http://127.0.0.1:%d/healthz" % port)
        report = json.loads(health)
        assert code == 503 and report["status"] == "critical"  # the schema run failed; no schema backup yet
        assert {c["check"] for c in report["checks"] if c["status"] == "critical"} == {"age:schema", "last-run"}
        report = json.loads(_get("http://127.0.0.1:%d/healthz?checksums=1&connect=1" % port)[1])
        critical = {c["check"] for c in report["checks"] if c["status"] == "critical"}
        assert critical == {"age:schema", "checksum:schema", "last-run"}
        assert {c["check"]: c["status"] for c in report["checks"]}["connectivity"] == "ok"
        assert _get("http://127.0.0.1:%d/nothing" % port)[0] == 404
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert server.returncode == 0, server.stderr.read()


def _get(url: str):
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _samples(parser, text: str) -> dict:
    found = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "host"))
            found[(sample.name, labels)] = sample.value
    return found


def _epoch(text: str) -> float:
    from datetime import datetime, timezone
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def test_health_notifies_on_changes_only_over_implicit_tls(repo, tmp_path):
    _require("aiosmtpd")
    with SmtpReceiver(str(tmp_path), password=SMTP_PASSWORD, mode="ssl") as smtp, HttpReceiver() as http:
        config = _config(tmp_path, smtp, http, onWarning=True)
        document = json.loads(open(config).read())
        document["backup"]["monitoring"]["alerts"]["email"]["security"] = "ssl"
        document["backup"]["monitoring"]["healthChecks"] = {"drillRequired": True}
        document["backup"]["types"] = {"schema": {"enabled": False}}
        open(config, "w").write(json.dumps(document))
        env = _env(repo, config, http)
        env.pop("BACKUP_DEADMANS_SWITCH_URL")
        first = cli.run(["health"], env, check=False)
        assert first.returncode == 2 and "CRITICAL  age:full" in first.stdout
        assert len(smtp.messages) == 1 and "health CRITICAL" in smtp.messages[0]["Subject"]
        text = smtp.messages[0].get_payload(decode=True).decode()
        assert "age:full critical: no good full backup" in text and "what to do: Run seawall-pgbackup health" in text
        assert cli.run(["health"], env, check=False).returncode == 2
        assert len(smtp.messages) == 1 and len(http.at("/hook")) == 1  # still critical: no news
        cli.create(env, "full")
        second = cli.run(["health", "--json"], env, check=False)
        assert second.returncode == 1, second.stdout  # no drill yet and drillRequired: a warning
        assert json.loads(second.stdout)["status"] == "warning"
        assert len(smtp.messages) == 2 and "health WARNING" in smtp.messages[1]["Subject"]
        assert [json.loads(r["body"])["status"] for r in http.at("/hook")] == ["critical", "warning"]
        assert len(http.at("/slack/T000/B000/token")) == 2


def test_health_playbook_uses_the_module(repo, tmp_path):
    from tests.integration.test_roles import REPO, run_playbook

    env = cli.cli_env(repo["cluster"].url(repo["db"]), repo["dir"])
    cli.create(env, "full")
    common = ["-c", "local", "-e", "ansible_python_interpreter=%s" % sys.executable, "-e",
              "pgbackup_backup_dir=%s" % repo["dir"], "-e", "pgbackup_config_dir=%s" % (tmp_path / "none")]
    ok = run_playbook(REPO / "playbooks" / "health.yml", *common, "-e",
                      "pgbackup_database_url=%s" % repo["cluster"].url(repo["db"]), "-e", "pgbackup_health_fail_on=never")
    tasks = [t for play in json.loads(ok.stdout)["plays"] for t in play["tasks"]]
    result = [t for t in tasks if t["task"]["name"] == "Run the health checks"][0]["hosts"]["localhost"]
    checks = {c["check"]: c["status"] for c in result["checks"]}
    assert result["changed"] is False and checks["connectivity"] == "ok" and checks["age:full"] == "ok"
    assert checks["checksum:full"] == "ok" and checks["age:schema"] == "critical" and result["exit_code"] == 2
    assert repo["cluster"].url(repo["db"]).split("@")[0] not in ok.stdout or "password" not in ok.stdout
    port = free_port()
    failed = run_playbook(REPO / "playbooks" / "health.yml", *common, "-e",
                          "pgbackup_database_url=postgresql://nobody@127.0.0.1:%d/x" % port, check=False)
    assert failed.returncode != 0
    # the module's no_log masks the URL as written; the message names the server without it (issue 13)
    assert "health is CRITICAL: connectivity critical: cannot connect to server 127.0.0.1:%d, database x, user " \
        "nobody: Connection refused" % port in failed.stdout
