"""The roles seawall.pgbackup.tooling and seawall.pgbackup.schedule, checked without a systemd or Windows host.

* Linux: tests/integration/roles/render_linux.yml renders every unit, the job scripts, config.json,
  secrets.env and pgpass into a fake root; `systemd-analyze verify --root` must accept every unit without a
  word, the contents are checked (hardening, OnCalendar= from the cron schedules, no secret outside its 0600
  files), a second run changes nothing, and a job removed from the variables loses its units.
* Windows: tests/integration/roles/render_windows.yml renders the scheduled task definitions and validates
  them against community.windows.win_scheduled_task's own argument spec; backup.ps1 is parsed with
  tree-sitter-powershell (syntax, parameters) and its action -> engine argument mapping is parsed by the
  engine's own argparse parser.
* Argument specs: wrong variable types make both roles fail with the argument spec message.

The converge test on a real systemd host (timers started, services run) is molecule's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = Path(__file__).resolve().parent / "roles"
ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
UNIT_DIR = "etc/systemd/system"
SECRET = "s3cr:t"  # the password of the URL in render_linux.yml (percent-encoded there)
RENDER_KEY = "5f1d0c3b9a8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a392817065f4e"  # pgbackup_encryption_key there
# pgbackup_encryption_signing_key there (a test-only key), its public key and the signer pinned there.
SIGNING_KEY = ("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIFBsv34gfZ02ZnsBb07NJtjRtmdQhHAqWgXG7frp4uBA\n"
               "-----END PRIVATE KEY-----\n")
SIGNING_PUBLIC = "ed25519:+iCCvvYeBz1lDdiUdlOByj06p27Pia4v5weh1CkJjms="
PINNED_SIGNER = "ed25519:/FL8R0arxoONeOC6Tq0yFTOGFf1eYo1nlLnkdihoYbA="
EXPECTED_CALENDARS = {  # job -> OnCalendar= values, for the schedules in render_linux.yml
    "full": ["*-*-* 02:00:00"],
    "schema": ["Tue *-*-* 04:15:00"],
    "cleanup": ["Sun *-*-* 03:00:00"],
    "verify": ["*-*-* 03:30:00"],
    "health": ["*-*-* *:00,15,30,45:00"],
}


def run_playbook(playbook: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_NOCOLOR="1")
    # not inventories/local, whose pgbackup_config would change the schedules: localhost in the group postgresql
    result = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(REPO / "tests/support/localhost.yml"), str(playbook), *extra], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    if check and result.returncode != 0:
        pytest.fail("%s failed (%d):\n%s\n%s" % (playbook.name, result.returncode, result.stdout[-6000:], result.stderr[-3000:]))
    return result


def stats(result: subprocess.CompletedProcess) -> Dict[str, int]:
    return json.loads(result.stdout)["stats"]["localhost"]


def make_root(root: Path) -> None:
    """A root systemd-analyze can verify units in: the host's system units and the executables they name."""
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    for path in ("opt/seawall-pgbackup/bin/seawall-pgbackup",):
        exe = root / path
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(shutil.which("flock") or "/usr/bin/flock", root / "usr/bin/flock")
    (root / "bin").mkdir(exist_ok=True)  # the foreground scheduler's ExecReload=/bin/kill
    shutil.copy2(shutil.which("kill") or "/bin/kill", root / "bin/kill")
    (root / "opt/seawall-pgbackup/libexec").mkdir(parents=True, exist_ok=True)
    (root / "etc/seawall-pgbackup").mkdir(parents=True, exist_ok=True)


def units(root: Path) -> List[Path]:
    return sorted((root / UNIT_DIR).glob("seawall-pgbackup-*"))


def parse_unit(path: Path) -> Dict[str, List[str]]:
    """key -> values (section-qualified: 'Service.ExecStart')."""
    section, values = "", {}  # type: str, Dict[str, List[str]]
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, value = line.split("=", 1) if "=" in line else (line, "")
        values.setdefault("%s.%s" % (section, key), []).append(value)
    return values


@pytest.fixture(scope="module")
def linux_root(tmp_path_factory) -> Path:
    if not os.access(SYSTEMD_ANALYZE, os.X_OK):
        pytest.skip("systemd-analyze is not installed")
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip("no .venv: run make setup")
    root = tmp_path_factory.mktemp("root")
    make_root(root)
    run_playbook(PLAYBOOKS / "render_linux.yml", "-e", "render_root=%s" % root)
    return root


def test_every_unit_passes_systemd_analyze_verify(linux_root):
    found = units(linux_root)
    names = sorted(p.name for p in found)
    expected = sorted(["seawall-pgbackup-failure@.service"]
                      + ["seawall-pgbackup-%s.%s" % (job, ext) for job in EXPECTED_CALENDARS for ext in ("service", "timer")])
    assert names == expected
    for unit in found:
        result = subprocess.run([SYSTEMD_ANALYZE, "verify", "--root=%s" % linux_root, "/%s/%s" % (UNIT_DIR, unit.name)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), \
            "%s: %s%s" % (unit.name, result.stdout, result.stderr)


def test_hardening_scores_ok(linux_root):
    result = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", "--root=%s" % linux_root,
                             "/%s/seawall-pgbackup-full.service" % UNIT_DIR],
                            capture_output=True, text=True, timeout=60, check=False)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout  # "OK": below 2.0 on systemd's 0-10 scale


def test_timers_fire_on_the_cron_schedules(linux_root):
    for job, calendars in EXPECTED_CALENDARS.items():
        timer = parse_unit(linux_root / UNIT_DIR / ("seawall-pgbackup-%s.timer" % job))
        assert timer["Timer.OnCalendar"] == calendars, job
        assert timer["Timer.Persistent"] == ["true"]
        assert timer["Timer.RandomizedDelaySec"] == ["5m"]
        assert timer["Install.WantedBy"] == ["timers.target"]


def test_services_run_the_engine_hardened(linux_root):
    engine = "/opt/seawall-pgbackup/bin/seawall-pgbackup"
    commands = {"full": "create --type full", "schema": "create --type schema", "cleanup": "cleanup",
                "verify": "verify latest --level archive", "health": "health"}
    for job, arguments in commands.items():
        service = parse_unit(linux_root / UNIT_DIR / ("seawall-pgbackup-%s.service" % job))
        exec_start = service["Service.ExecStart"]
        assert len(exec_start) == 1
        if job == "health":  # read-only: no lock
            assert exec_start[0] == "%s %s" % (engine, arguments)
            assert service["Service.SuccessExitStatus"] == ["1"]
        else:
            assert exec_start[0] == ("/usr/bin/flock --exclusive --wait 21600 --conflict-exit-code 75 "
                                     "/var/backups/postgresql/.schedule.lock %s %s" % (engine, arguments))
        expected = {
            "Service.Type": ["oneshot"], "Service.User": ["pgbackup"], "Service.Group": ["pgbackup"],
            "Service.EnvironmentFile": ["/etc/seawall-pgbackup/secrets.env"],
            "Service.ProtectSystem": ["strict"], "Service.ReadWritePaths": ["/var/backups/postgresql"],
            "Service.NoNewPrivileges": ["yes"], "Service.PrivateTmp": ["yes"], "Service.ProtectHome": ["yes"],
            "Service.RemoveIPC": ["yes"], "Unit.OnFailure": ["seawall-pgbackup-failure@%n.service"],
        }
        for key, value in expected.items():
            assert service.get(key) == value, (job, key, service.get(key))
        assert sorted(service["Service.Environment"]) == ["BACKUP_CONFIG=/etc/seawall-pgbackup/config.json",
                                                          "PGPASSFILE=/etc/seawall-pgbackup/pgpass"]
    failure = parse_unit(linux_root / UNIT_DIR / "seawall-pgbackup-failure@.service")
    assert failure["Service.ExecStart"] == ["/opt/seawall-pgbackup/libexec/record-failure %i"]


def test_secrets_only_in_their_private_files(linux_root):
    for path in linux_root.rglob("*"):
        if not path.is_file() or "usr/lib/systemd" in str(path):
            continue
        text = path.read_text(errors="replace")
        if path.name == "pgpass":
            assert text == "db.example.internal:5433:*:backup:s3cr\\:t\n"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        else:
            assert SECRET not in text and "s3cr%3At" not in text, path
        if path.name == "secrets.env":
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert "DATABASE_URL='postgresql://backup@db.example.internal:5433/highseas_vtt?sslmode=require'" in text
            assert "ENCRYPTION" not in text
        if path.name in ("encryption.key", "000.key"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert (RENDER_KEY if path.name == "encryption.key" else RENDER_KEY[::-1]) in text
        elif RENDER_KEY in text or RENDER_KEY[::-1] in text:
            pytest.fail("an encryption key is in %s" % path)
        if path.name == "signing.pem":
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert text == SIGNING_KEY
        elif SIGNING_KEY.splitlines()[1] in text:
            pytest.fail("the signing key is in %s" % path)
    assert (linux_root / "etc/seawall-pgbackup/signing.pem").is_file()


def test_config_json_is_read_by_the_engine(linux_root):
    path = linux_root / "etc/seawall-pgbackup/config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    document = json.loads(path.read_text())
    backup = document["backup"]
    assert backup["directory"] == "/var/backups/postgresql" and backup["timezone"] == "UTC"
    assert backup["types"]["full"] == {"enabled": True, "schedule": "0 2 * * *", "retention": {"daily": 3}}
    assert backup["types"]["schema"] == {"enabled": True, "schedule": "15 4 * * 2"}
    assert backup["types"]["incremental"]["enabled"] is False
    assert backup["types"]["base"] == {"enabled": False, "schedule": "30 1 * * *"}  # only with archiving
    assert backup["types"]["data"] == {"enabled": False}
    assert backup["cleanup"] == {"schedule": "0 3 * * 0"}
    assert backup["encryption"] == {"enabled": True, "mode": "aes-256-gcm",
                                    "keyFile": str(linux_root / "etc/seawall-pgbackup/encryption.key"),
                                    "keyring": str(linux_root / "etc/seawall-pgbackup/keyring"),
                                    "signingKeyFile": str(linux_root / "etc/seawall-pgbackup/signing.pem"),
                                    "trustedSigners": [PINNED_SIGNER], "retiredKeys": ["0123456789abcdef"]}
    assert backup["repository"] == "highseas-prod"
    # The engine accepts it, and its health check expects exactly the scheduled kinds.
    import sys  # pylint: disable=import-outside-toplevel
    sys.path.insert(0, str(REPO))
    from plugins.module_utils.pgbackup.config.settings import load_config  # pylint: disable=import-outside-toplevel
    cfg = load_config(env={}, config_file=str(path))
    assert cfg.public()["schedules"] == {"full": "0 2 * * *", "base": "30 1 * * *", "incremental": "0 * * * *",
                                         "schema": "15 4 * * 2", "cleanup": "0 3 * * 0"}
    assert [k for k, s in cfg.kinds.items() if s.enabled and s.schedule] == ["full", "schema"]
    assert cfg.repository_id == "highseas-prod" and cfg.encryption_retired_keys == ["0123456789abcdef"]
    # The engine loads the rendered signing key and trusts it besides the pinned signer.
    from plugins.module_utils.pgbackup.codec.authn import Trust, public_text  # pylint: disable=import-outside-toplevel
    trust = Trust.from_config(cfg)
    assert public_text(trust.signing_key.public_key()) == SIGNING_PUBLIC
    assert sorted(public_text(p) for p in trust.signers.values()) == sorted([SIGNING_PUBLIC, PINNED_SIGNER])


def test_job_scripts_are_valid_shell(linux_root):
    for name in ("record-failure", "run-job"):
        path = linux_root / "opt/seawall-pgbackup/libexec" / name
        subprocess.run(["sh", "-n", str(path)], check=True)
        if shutil.which("shellcheck"):
            result = subprocess.run(["shellcheck", "-s", "sh", str(path)], capture_output=True, text=True, check=False)
            assert result.returncode == 0, result.stdout


def test_record_failure_appends_a_log_line(linux_root, tmp_path):
    script = (linux_root / "opt/seawall-pgbackup/libexec/record-failure").read_text()
    script = script.replace("/var/backups/postgresql", str(tmp_path))
    (tmp_path / "logs").mkdir()
    (tmp_path / "record").write_text(script)
    env = dict(os.environ, MONITOR_SERVICE_RESULT="exit-code", MONITOR_EXIT_CODE="exited", MONITOR_EXIT_STATUS="1")
    subprocess.run(["sh", str(tmp_path / "record"), "seawall-pgbackup-full.service"], env=env, check=True)
    line = (tmp_path / "logs/backup-failures.log").read_text()
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000000Z ERROR unit-failed unit=seawall-pgbackup-full.service "
                    r"result=exit-code exit_code=exited exit_status=1\n$", line), line
    assert stat.S_IMODE((tmp_path / "logs/backup-failures.log").stat().st_mode) == 0o600


def test_second_run_changes_nothing_and_removed_jobs_lose_their_units(linux_root):
    # another role's unit with the same prefix (roles/wal_archive's receiver) is not this role's to remove
    foreign = linux_root / UNIT_DIR / "seawall-pgbackup-wal-receive.service"
    foreign.write_text("[Service]\nExecStart=/bin/true\n")
    again = run_playbook(PLAYBOOKS / "render_linux.yml", "-e", "render_root=%s" % linux_root)
    assert stats(again)["changed"] == 0 and foreign.exists()
    fewer = run_playbook(PLAYBOOKS / "render_linux.yml", "-e", "render_root=%s" % linux_root,
                         "-e", '{"pgbackup_schedule_verify": "", "render_schema_enabled": false}')
    names = {p.name for p in units(linux_root)}
    assert stats(fewer)["changed"] > 0
    for job in ("verify", "schema"):
        assert "seawall-pgbackup-%s.timer" % job not in names and "seawall-pgbackup-%s.service" % job not in names
    assert "seawall-pgbackup-full.timer" in names
    assert foreign.exists()
    foreign.unlink()
    run_playbook(PLAYBOOKS / "render_linux.yml", "-e", "render_root=%s" % linux_root)  # back for the other tests
    assert len(units(linux_root)) == 11


def test_switching_to_the_foreground_scheduler_and_back_leaves_exactly_its_units(linux_root):
    timers = sorted(p.name for p in units(linux_root))
    foreign = linux_root / UNIT_DIR / "seawall-pgbackup-wal-receive.service"  # roles/wal_archive's, kept throughout
    foreign.write_text("[Service]\nExecStart=/bin/true\n")
    foreground = ("-e", "pgbackup_scheduler=foreground", "-e", "pgbackup_scheduler_serve=127.0.0.1:9187",
                  "-e", "pgbackup_randomized_delay=1h2m30s")
    try:
        switched = run_playbook(PLAYBOOKS / "render_linux.yml", "-e", "render_root=%s" % linux_root, *foreground)
        assert stats(switched)["changed"] > 0
        assert sorted(p.name for p in units(linux_root)) == [
            "seawall-pgbackup-failure@.service", "seawall-pgbackup-scheduler.service",
            "seawall-pgbackup-wal-receive.service"]
        unit = linux_root / UNIT_DIR / "seawall-pgbackup-scheduler.service"
        result = subprocess.run([SYSTEMD_ANALYZE, "verify", "--root=%s" % linux_root, "/%s/%s" % (UNIT_DIR, unit.name)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), \
            result.stdout + result.stderr
        service = parse_unit(unit)
        assert service["Service.ExecStart"] == [
            "/opt/seawall-pgbackup/bin/seawall-pgbackup schedule --log-format text --grace 600 --jitter 1h2m30s "
            "--serve 127.0.0.1:9187"]
        assert service["Service.KillMode"] == ["mixed"] and service["Service.TimeoutStopSec"] == ["630"]
        assert service["Service.User"] == ["pgbackup"] and service["Service.UMask"] == ["0077"]
        assert service["Service.EnvironmentFile"] == ["/etc/seawall-pgbackup/secrets.env"]
        assert service["Service.Environment"] == ["BACKUP_CONFIG=/etc/seawall-pgbackup/config.json",
                                                  "PGPASSFILE=/etc/seawall-pgbackup/pgpass"]
        assert service["Install.WantedBy"] == ["multi-user.target"]
        assert SECRET not in unit.read_text()
        exposure = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", "--root=%s" % linux_root,
                                   "/%s/%s" % (UNIT_DIR, unit.name)], capture_output=True, text=True, timeout=60,
                                  check=False)
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", exposure.stdout)
        assert match and float(match.group(1)) <= 2.0, exposure.stdout + exposure.stderr  # as the timers' services
        again = run_playbook(PLAYBOOKS / "render_linux.yml", "-e", "render_root=%s" % linux_root, *foreground)
        assert stats(again)["changed"] == 0
        check = run_playbook(PLAYBOOKS / "render_linux.yml", "-e", "render_root=%s" % linux_root, "--check")
        assert stats(check)["changed"] > 0 and unit.exists()  # check mode reports the switch back, writes nothing
    finally:
        back = run_playbook(PLAYBOOKS / "render_linux.yml", "-e", "render_root=%s" % linux_root)
    assert stats(back)["changed"] > 0
    assert sorted(p.name for p in units(linux_root)) == sorted(timers + [foreign.name])
    foreign.unlink()


# ------------------------------------------------------------------------------------------------ Windows

@pytest.fixture(scope="module")
def windows_tasks(tmp_path_factory) -> List[dict]:
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip("no .venv: run make setup")
    out = tmp_path_factory.mktemp("windows") / "tasks.json"
    run_playbook(PLAYBOOKS / "render_windows.yml", "-e", "render_out=%s" % out)
    return json.loads(out.read_text())


def test_windows_tasks(windows_tasks):
    by_name = {t["name"]: t for t in windows_tasks}
    jobs = ("full", "base", "incremental", "schema", "data", "globals", "cleanup", "verify", "health")
    assert sorted(by_name) == sorted("seawall-pgbackup-%s" % j for j in jobs)
    for name in ("base", "incremental", "data", "globals"):
        assert by_name["seawall-pgbackup-" + name] == {"name": "seawall-pgbackup-" + name, "path": "\\seawall-pgbackup\\",
                                                       "state": "absent"}
    full = by_name["seawall-pgbackup-full"]
    assert full["triggers"] == [{"type": "daily", "start_boundary": "2026-01-01T02:00:00", "random_delay": "PT5M"}]
    assert full["username"] == "pgbackup" and full["logon_type"] == "password" and "password" not in full
    assert full["multiple_instances"] == 2 and full["start_when_available"] is True
    assert full["actions"][0]["arguments"] == (
        '-NoProfile -NonInteractive -ExecutionPolicy Bypass -File "C:\\ProgramData\\seawall-pgbackup\\backup.ps1" '
        '-Action create -BackupType full -Engine "C:\\Program Files\\seawall-pgbackup\\Scripts\\seawall-pgbackup.exe"')
    assert by_name["seawall-pgbackup-schema"]["triggers"] == [
        {"type": "weekly", "days_of_week": "monday", "weeks_interval": 1, "start_boundary": "2026-01-01T03:00:00",
         "random_delay": "PT5M"}]
    assert by_name["seawall-pgbackup-health"]["triggers"] == [
        {"type": "daily", "start_boundary": "2026-01-01T00:00:00", "random_delay": "PT5M",
         "repetition": {"interval": "PT15M", "duration": "P1D", "stop_at_duration_end": False}}]
    assert "-Action health" in by_name["seawall-pgbackup-health"]["actions"][0]["arguments"]
    assert "-Action cleanup" in by_name["seawall-pgbackup-cleanup"]["actions"][0]["arguments"]


def _ps_tree():
    try:
        import tree_sitter  # pylint: disable=import-outside-toplevel
        import tree_sitter_powershell as tsp  # pylint: disable=import-outside-toplevel
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("tree-sitter-powershell is not installed (requirements-dev.txt)")
    parser = tree_sitter.Parser(tree_sitter.Language(tsp.language()))
    source = (REPO / "roles/schedule/files/backup.ps1").read_bytes()
    return parser.parse(source)


def _nodes(node, kind):
    if node.type == kind:
        yield node
    for child in node.children:
        yield from _nodes(child, kind)


def _literal(node) -> str:
    text = node.text.decode()
    return text[1:-1] if node.type == "string_literal" else text


def _values(node) -> List[str]:
    """String literals and variables below ``node``, in order."""
    out = []

    def walk(n):
        if n.type in ("string_literal", "variable"):
            out.append(_literal(n))
            return
        for c in n.children:
            walk(c)
    walk(node)
    return out


def test_backup_ps1_parses_and_has_the_users_parameters():
    tree = _ps_tree()
    errors = list(_nodes(tree.root_node, "ERROR"))
    assert not tree.root_node.has_error, ["%s: %s" % (n.start_point, n.text[:80]) for n in errors]
    parameters = {}
    for parameter in _nodes(tree.root_node, "script_parameter"):
        name = next(c for c in parameter.children if c.type == "variable").text.decode()
        validate = [a for a in _nodes(parameter, "attribute") if "ValidateSet" in a.text.decode()]
        parameters[name] = _values(validate[0]) if validate else None
    assert set(parameters["$Action"]) >= {"create", "restore", "schedule", "cleanup", "health"}
    assert parameters["$BackupType"] == ["full", "schema", "data", "globals", "base", "incremental"]
    assert "$BackupPath" in parameters


def test_backup_ps1_maps_every_action_to_a_valid_engine_command_line(windows_tasks):
    import sys  # pylint: disable=import-outside-toplevel
    sys.path.insert(0, str(REPO))
    from plugins.module_utils.pgbackup.cli.main import _parser  # pylint: disable=import-outside-toplevel

    tree = _ps_tree()
    mapping = {}
    for entry in _nodes(tree.root_node, "hash_entry"):
        key = _values(entry.child_by_field_name("key") or entry.children[0])[0]
        mapping[key] = _values(entry.children[-1])
    assert mapping["create"] == ["create", "--type", "$BackupType"]
    assert mapping["restore"] == ["restore", "$BackupPath"]
    assert mapping["cleanup"] == ["cleanup"] and mapping["health"] == ["health"]
    actions = set(_values(next(a for a in _nodes(tree.root_node, "attribute")
                               if "ValidateSet('create'" in a.text.decode())))
    assert set(mapping) == actions - {"schedule"}  # schedule lists the tasks, it runs no engine command
    parser = _parser()
    for action, arguments in mapping.items():
        for kind in ("full", "schema", "data", "globals", "base", "incremental"):
            argv = ["--config", "C:\\ProgramData\\seawall-pgbackup\\config.json"] + [
                {"$BackupType": kind, "$BackupPath": "C:\\backups\\full\\x.json"}.get(a, a) for a in arguments]
            parsed = parser.parse_args(argv)  # SystemExit on anything the engine does not accept
            assert parsed.command == arguments[0]
            if "--type" in arguments:
                assert parsed.kind == kind
    # The scheduled tasks call backup.ps1 with actions and types it accepts.
    for task in windows_tasks:
        if task["state"] != "present":
            continue
        words = task["actions"][0]["arguments"].split()
        action = words[words.index("-Action") + 1]
        assert action in mapping, task["name"]
        if "-BackupType" in words:
            assert words[words.index("-BackupType") + 1] in ("full", "schema", "data", "globals", "base", "incremental")


# ------------------------------------------------------------------------------------------------ argument specs

@pytest.mark.parametrize("role, variables, message", [
    ("tooling", {"pgbackup_database_url": "postgresql://b@h/d", "pgbackup_physical": "maybe"}, "pgbackup_physical"),
    ("tooling", {"pgbackup_database_url": "postgresql://b@h/d", "pgbackup_pg_client_source": "pgdg"}, "pgbackup_pg_client_source"),
    ("tooling", {}, "pgbackup_database_url"),
    ("tooling", {"pgbackup_database_url": "postgresql://b@h/d", "pgbackup_encryption_trusted_signers": {"a": 1}},
     "pgbackup_encryption_trusted_signers"),
    ("schedule", {"pgbackup_lock_wait": "soon"}, "pgbackup_lock_wait"),
    ("schedule", {"pgbackup_scheduler": "launchd"}, "pgbackup_scheduler"),
    ("schedule", {"pgbackup_verify_arguments": {"level": "archive"}}, "pgbackup_verify_arguments"),
])
def test_argument_specs_reject_wrong_variables(role, variables, message, tmp_path):
    playbook = tmp_path / "apply.yml"
    playbook.write_text(json.dumps([{
        "name": "Apply", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        "tasks": [{"name": "Apply the role", "ansible.builtin.include_role": {"name": "seawall.pgbackup." + role}}],
    }]))
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    result = run_playbook(playbook, "-e", "@%s" % (tmp_path / "vars.json"), check=False)
    assert result.returncode != 0
    output = json.loads(result.stdout)
    failed = [t for play in output["plays"] for t in play["tasks"] if t["hosts"]["localhost"].get("failed")]
    assert failed and "Validating arguments against arg spec" in failed[0]["task"]["name"], failed
    assert message in failed[0]["hosts"]["localhost"]["msg"] or message in json.dumps(failed[0]["hosts"]["localhost"])


# ------------------------------------------------------------------------------------------------ settings checks

AGE_RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
AGE_HOST = {"pgbackup_database_url": "postgresql://b@h/d", "pgbackup_encryption": True,
            "pgbackup_encryption_mode": "age", "pgbackup_encryption_recipients": [AGE_RECIPIENT]}


def run_checks(variables: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    """seawall.pgbackup.tooling's checks alone (tasks/checks.yml), which main.yml runs before changing anything."""
    playbook = tmp_path / "check.yml"
    playbook.write_text(json.dumps([{
        "name": "Check", "hosts": "localhost", "connection": "local", "gather_facts": True,
        "gather_subset": ["!all", "!min", "distribution"],
        "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        "tasks": [
            {"name": "Check the settings", "ansible.builtin.include_role": {
                "name": "seawall.pgbackup.tooling", "tasks_from": "checks.yml", "public": True}},
            {"name": "Show backup.encryption of config.json", "ansible.builtin.debug": {
                "var": "pgbackup_tooling_config_document.backup.encryption"}},
        ],
    }]))
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    return run_playbook(playbook, "-e", "@%s" % (tmp_path / "vars.json"), check=False)


def failed_message(result: subprocess.CompletedProcess) -> str:
    output = json.loads(result.stdout)
    failed = [t for play in output["plays"] for t in play["tasks"] if t["hosts"]["localhost"].get("failed")]
    assert len(failed) == 1, result.stdout[-3000:]
    return "%s: %s" % (failed[0]["task"]["name"], failed[0]["hosts"]["localhost"]["msg"])


@pytest.mark.parametrize("variables, message", [
    # age mode: the host holds no secret to sign manifests with unless it is given one.
    ({}, "with pgbackup_encryption_mode=age needs pgbackup_encryption_signing_key"),
    ({"pgbackup_encryption_signing_key": SIGNING_KEY.replace("PRIVATE KEY", "OPENSSH PRIVATE KEY")},
     "must be an unencrypted PEM private key"),
    ({"pgbackup_encryption_signing_key": SIGNING_KEY,
      "pgbackup_encryption_trusted_signers": [PINNED_SIGNER[:-2] + "="]},
     "pgbackup_encryption_trusted_signers ed25519: and 44 base64"),
    ({"pgbackup_encryption_signing_key": SIGNING_KEY, "pgbackup_encryption_retired_keys": ["0123456789abcdeg"]},
     "pgbackup_encryption_retired_keys 16 hex digits"),
    ({"pgbackup_encryption_signing_key": SIGNING_KEY, "pgbackup_repository_id": "-prod"},
     "pgbackup_repository_id letters, digits"),
])
def test_checks_refuse_wrong_signing_settings(variables, message, tmp_path):
    result = run_checks(dict(AGE_HOST, **variables), tmp_path)
    assert result.returncode != 0
    text = failed_message(result)
    assert message in text, text
    assert SIGNING_KEY.splitlines()[1] not in result.stdout + result.stderr  # never shown, even when refused


def test_checks_accept_a_signing_age_host_and_an_aes_host(tmp_path):
    signing = dict(AGE_HOST, pgbackup_encryption_signing_key=SIGNING_KEY,
                   pgbackup_encryption_trusted_signers=[PINNED_SIGNER],
                   pgbackup_encryption_retired_keys=["0123456789ABCDEF"], pgbackup_repository_id="highseas-prod")
    assert run_checks(signing, tmp_path).returncode == 0
    # aes-256-gcm signs with a key derived from the repository key: no signing key needed.
    aes = {"pgbackup_database_url": "postgresql://b@h/d", "pgbackup_encryption": True,
           "pgbackup_encryption_key": RENDER_KEY}
    assert run_checks(aes, tmp_path).returncode == 0


def rendered_encryption(variables: dict, tmp_path: Path) -> dict:
    result = run_checks(dict(variables, pgbackup_pg_client_source="distro"), tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    tasks = [t for play in json.loads(result.stdout)["plays"] for t in play["tasks"]]
    return tasks[-1]["hosts"]["localhost"]["pgbackup_tooling_config_document.backup.encryption"]


@pytest.mark.parametrize("users, enabled", [(True, True), ({"enabled": "true"}, True), (None, False), (False, False)])
def test_signers_set_in_the_role_keep_the_users_encryption_switch(users, enabled, tmp_path):
    variables = {"pgbackup_database_url": "postgresql://b@h/d", "pgbackup_encryption_trusted_signers": [PINNED_SIGNER]}
    if users is not None:
        variables["pgbackup_config"] = {"backup": {"encryption": users}}
    document = rendered_encryption(variables, tmp_path)
    assert document["enabled"] is enabled and document["trustedSigners"] == [PINNED_SIGNER]


@pytest.mark.parametrize("playbook", ["restore.yml", "dr_drill.yml"])
def test_restore_playbooks_pass_the_trust_settings_to_the_engine(playbook, tmp_path):
    variables = {"ansible_python_interpreter": "{{ ansible_playbook_python }}",
                 "pgbackup_database_url": "postgresql://backup@127.0.0.1:1/vtt", "pgbackup_backup_dir": str(tmp_path)}
    (tmp_path / "vars.json").write_text(json.dumps(dict(variables, pgbackup_accept_unsigned=True,
                                                        pgbackup_repository_id="highseas-prod",
                                                        pgbackup_encryption_trusted_signers=[PINNED_SIGNER])))
    arguments = ("-c", "local", "--check", "-e", "@%s" % (tmp_path / "vars.json"))
    planned = run_playbook(REPO / "playbooks" / playbook, *arguments)
    assert "(none yet)" in planned.stdout
    # The engine, not the playbook, refuses a wrong key: the setting reached it.
    (tmp_path / "vars.json").write_text(json.dumps(dict(variables, pgbackup_encryption_trusted_signers=["ed25519:x"])))
    refused = run_playbook(REPO / "playbooks" / playbook, *arguments, check=False)
    assert refused.returncode != 0
    assert "encryption_trusted_signers: 'ed25519:x' is not a valid Ed25519 public key" in refused.stdout


@pytest.mark.parametrize("playbook, pattern_variable", [
    ("backup.yml", "pgbackup_hosts"), ("cleanup.yml", "pgbackup_hosts"), ("health.yml", "pgbackup_hosts"),
    ("restore.yml", "pgbackup_hosts"), ("dr_drill.yml", "pgbackup_drill_hosts")])
def test_shipped_playbooks_fail_when_no_host_matches_their_pattern(playbook, pattern_variable, tmp_path):
    """They run on the group postgresql (not all), and a pattern that matches nothing is an error, not a no-op."""
    inventory = tmp_path / "web.yml"
    inventory.write_text(json.dumps({"all": {"children": {"web": {"hosts": {"localhost": {}}}}}}))

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), "--check", *extra,
                               str(REPO / "playbooks" / playbook)], cwd=REPO, capture_output=True, text=True,
                              env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1"),
                              timeout=300, check=False)

    default = run()
    assert default.returncode == 2, default.stdout
    assert "no host of the inventory matches the pattern 'postgresql'" in default.stdout, default.stdout
    assert re.search(r"localhost\s+: ok=0\s+changed=0\s+unreachable=0\s+failed=1\s", default.stdout), default.stdout
    other = run("-e", "%s=nothing" % pattern_variable)
    assert other.returncode == 2 and "matches the pattern 'nothing'" in other.stdout, other.stdout
