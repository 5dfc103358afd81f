"""The ansible-core versions the collection claims (meta/runtime.yml, README, the roles' min_ansible_version), tested
(issue 13: "test the lowest and highest in CI, compile/import for the rest").

- lowest (2.19, .venv from the ansible package): the same scenario as below runs there already, so it is not
  repeated: tests/integration/test_awx.py installs the built tarball and runs backup.yml (twice: the second run
  changes nothing), restore.yml into a new database (rows compared) and dr_drill.yml; backup.yml lists the
  repository with pg_backup_info; test_faults.py runs pg_backup's check-mode preflight (wrong password,
  unreachable server, missing privileges). Here it gets only the cheap check.
- highest (.venv-core-highest, requirements-core-highest.txt): the built tarball installed into a fresh collections
  path (its galaxy.yml dependencies resolved offline against .venv's ansible package), then against PostgreSQL 15:
  backup.yml in check mode (nothing written; a wrong password fails naming the server, never the password), for
  real, again (not changed: max_age), pg_backup_info ad hoc, and restore.yml into a new database, rows compared.
- every core, the middle one (2.20, .venv-core-middle) included: the cheap check, each with its own build and
  install: ansible-doc loads every module, filter and role argument spec; every playbook and every role tasks file
  (imported statically) passes --syntax-check, so each action resolves.

The core venvs come from `make setup-dev`; without them the tests skip locally and fail in CI (CI=true)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.support import REPO_ROOT, load_sample
from tests.support.collection import build_collection, install_collection

LOWEST = Path(sys.executable).parent  # .venv: ansible 12.3.0 = ansible-core 2.19
# Where the collections galaxy.yml depends on come from, for every core: .venv's ansible package.
DEPENDENCIES = next(Path(p) for p in sys.path if (Path(p) / "ansible_collections" / "community").is_dir())
# Deprecations of the dependencies that the collection still uses (the cheap check fails on any other, so a
# core or collection that deprecates something we use shows up here first).
KNOWN_DEPRECATIONS = (
    "community.postgresql.postgresql_set has been deprecated",  # roles/wal_archive: postgresql_alter_system next
)


def _core(name: str) -> Path:
    """The bin directory of core ``name`` (lowest, middle or highest), checked to run the version it pins."""
    if name == "lowest":
        return LOWEST
    venv = REPO_ROOT / (".venv-core-%s" % name)
    if not (venv / "bin" / "ansible-playbook").exists():
        message = "%s is missing: run `make setup-dev` (needs python3.13 or python3.12)" % venv
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    [pinned] = re.findall(r"^ansible-core==(\S+)$", (REPO_ROOT / ("requirements-core-%s.txt" % name)).read_text(),
                          re.M)
    version = subprocess.run([str(venv / "bin" / "ansible"), "--version"], capture_output=True, text=True,
                             check=True).stdout.splitlines()[0]
    assert "[core %s]" % pinned in version, "%s runs %s, requirements pin %s: run `make setup-dev`" % (
        venv, version, pinned)
    return venv / "bin"


def _env(collections: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PG", "DATABASE_URL", "BACKUP_"))}
    env.pop("PYTHONPATH", None)  # the engine comes from the installed collection, not from this checkout
    env.update(ANSIBLE_COLLECTIONS_PATH="%s:%s" % (collections, DEPENDENCIES), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_RETRY_FILES_ENABLED="0", **extra)
    return env


def _install(bin_dir: Path, work: Path) -> Path:
    """This checkout built and installed by ``bin_dir``'s ansible-galaxy; the fresh collections path."""
    tarball = build_collection(bin_dir / "ansible-galaxy", work)
    collections = work / "collections"
    output = install_collection(bin_dir / "ansible-galaxy", tarball, collections, dependencies_from=DEPENDENCIES,
                                env=_env(collections))
    for dependency in yaml.safe_load((REPO_ROOT / "galaxy.yml").read_text())["dependencies"]:
        assert "'%s:" % dependency in output, output  # resolved ("already installed"), not fetched
    return collections


# The json stdout callback these tests read results from is ansible.posix.json (ansible-core redirects `json` there),
# which imports ansible.module_utils._text: deprecated from 2.21 on. The collection has no such import (checked below).
HARNESS_DEPRECATION = "Importing 'to_text' from 'ansible.module_utils._text'"


def _problems(stderr: str, known: tuple = KNOWN_DEPRECATIONS) -> list:
    """Errors, a requires_ansible that excludes this core, and deprecations not known."""
    return [line for line in stderr.splitlines() if "[ERROR]" in line or "does not support Ansible version" in line
            or ("[DEPRECATION WARNING]" in line and not any(text in line for text in known))]


def test_the_claims_name_the_tested_cores():
    """requires_ansible starts at the lowest tested core, admits the others and has no upper bound; the README and the
    roles say the same."""
    from ansible.release import __version__ as lowest

    claimed = yaml.safe_load((REPO_ROOT / "meta" / "runtime.yml").read_text())["requires_ansible"]
    minor = ".".join(lowest.split(".")[:2])
    assert claimed == ">=%s.0" % minor, claimed
    pins = {name: re.search(r"^ansible-core==(\S+)$", (REPO_ROOT / ("requirements-core-%s.txt" % name)).read_text(),
                            re.M).group(1) for name in ("middle", "highest")}
    # claimed is exactly ">=X.Y.0" (above), so a tuple comparison is its whole meaning
    assert all(tuple(map(int, v.split(".")[:2])) >= tuple(map(int, minor.split("."))) for v in pins.values()), pins
    highest = ".".join(pins["highest"].split(".")[:2])
    readme = (REPO_ROOT / "README.md").read_text()
    assert "ansible-core %s or later" % minor in readme and "%s and %s" % (minor, highest) in readme
    for role in REPO_ROOT.glob("roles/*/meta/main.yml"):
        meta = role.read_text()
        assert yaml.safe_load(meta)["galaxy_info"]["min_ansible_version"] == minor, role
        assert "%s to %s" % (minor, highest) in meta, role


@pytest.mark.parametrize("core", ["lowest", "middle", "highest"])
def test_every_plugin_role_and_playbook_loads(core, tmp_path):
    bin_dir = _core(core)
    collections = _install(bin_dir, tmp_path)
    env = _env(collections)
    installed = collections / "ansible_collections" / "seawall" / "pgbackup"

    def run(*argv: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(bin_dir / argv[0]), *argv[1:]], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300, check=False)
        assert proc.returncode == 0, (argv, proc.stdout[-2000:], proc.stderr)
        assert _problems(proc.stderr) == [], (argv, proc.stderr)
        return proc

    for kind, files in (("module", installed.glob("plugins/modules/*.py")),
                        ("filter", installed.glob("plugins/filter/*.py")),
                        ("role", installed.glob("roles/*/meta/argument_specs.yml"))):
        names = sorted("seawall.pgbackup.%s" % (f.parent.parent.name if kind == "role" else f.stem) for f in files)
        assert names, kind
        docs = json.loads(run("ansible-doc", "--json", "-t", kind, *names).stdout)
        assert sorted(docs) == names, (kind, sorted(docs))
        if kind != "role":
            assert all(doc["doc"]["short_description"] for doc in docs.values()), kind

    tasks = [{"name": "%s %s" % (f.parent.parent.name, f.stem), "ansible.builtin.import_role": {
        "name": "seawall.pgbackup.%s" % f.parent.parent.name, "tasks_from": f.stem}}
        for f in sorted(installed.glob("roles/*/tasks/*.yml"))]
    assert len(tasks) > 20
    (tmp_path / "roles.yml").write_text(yaml.safe_dump([{"name": "Every role's tasks", "hosts": "localhost",
                                                         "gather_facts": False, "tasks": tasks}]))
    playbooks = sorted("seawall.pgbackup.%s" % p.stem for p in installed.glob("playbooks/*.yml"))
    assert "seawall.pgbackup.backup" in playbooks
    checked = run("ansible-playbook", "-i", "localhost,", "--syntax-check", "roles.yml", *playbooks)
    assert checked.stdout.count("playbook: ") == len(playbooks) + 1, checked.stdout


def _playbook(bin_dir: Path, env: dict, work: Path, playbook: str, extravars: dict, *options: str) -> dict:
    """Run one of the installed collection's playbooks; the json callback's report."""
    (work / "extravars.json").write_text(json.dumps(extravars))
    proc = subprocess.run([str(bin_dir / "ansible-playbook"), "-i", "inventory.yml", *options,
                           "seawall.pgbackup.%s" % playbook, "-e", "@extravars.json"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600, check=False)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("%s %s: %s%s" % (playbook, options, proc.stdout[-3000:], proc.stderr[-3000:]))
    report["rc"], report["stderr"] = proc.returncode, proc.stderr
    assert _problems(proc.stderr, KNOWN_DEPRECATIONS + (HARNESS_DEPRECATION,)) == [], (playbook, proc.stderr)
    return report


def _results(report: dict, action: str) -> list:
    """The results of ``action``'s tasks (each item of a loop)."""
    found = []
    for play in report["plays"]:
        for task in play["tasks"]:
            for result in task["hosts"].values():
                if result.get("action") == action:
                    found.extend(result.get("results") or [result])
    return found


def test_backup_and_restore_with_the_highest_core(pg15, tmp_path):
    started = time.monotonic()
    bin_dir = _core("highest")
    collections = _install(bin_dir, tmp_path)
    installed = collections / "ansible_collections" / "seawall" / "pgbackup"
    assert not [f for f in installed.rglob("*.py") if "module_utils._text" in f.read_text()]  # HARNESS_DEPRECATION
    name = "cores_%s" % uuid.uuid4().hex[:8]
    copy = "%s_copy" % name
    load_sample(pg15, name)
    backup_dir = tmp_path / "backups"
    python = bin_dir / "python"  # the managed host: this controller's own Python 3.12+, ansible-core's packages only
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump({"postgresql": {"hosts": {"db-1": {
        "ansible_connection": "local", "ansible_python_interpreter": str(python),
        "pgbackup_database_url": pg15.url(name), "pgbackup_backup_dir": str(backup_dir)}}}}))
    env = _env(collections, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1")
    try:
        # check mode is a preflight: a wrong password fails, naming the server and never the password
        secret = "wrong-%s" % uuid.uuid4().hex
        wrong = _playbook(bin_dir, env, tmp_path, "backup", {"pgbackup_database_url": pg15.url(name, password=secret)},
                          "--check")
        assert wrong["rc"] != 0 and wrong["stats"]["db-1"]["failures"] == 1, wrong
        [failed] = _results(wrong, "seawall.pgbackup.pg_backup")
        assert "127.0.0.1:%d" % pg15.port in failed["msg"] and name in failed["msg"], failed
        assert secret not in json.dumps(wrong) + wrong["stderr"]

        checked = _playbook(bin_dir, env, tmp_path, "backup", {}, "--check")
        assert checked["rc"] == 0 and checked["stats"]["db-1"]["changed"] >= 1, checked
        [would] = _results(checked, "seawall.pgbackup.pg_backup")
        assert would["changed"] and not would.get("backup") and would["preflight"], would
        assert not list(backup_dir.rglob("*.dump*")), "check mode wrote a backup"

        first = _playbook(bin_dir, env, tmp_path, "backup", {})
        assert first["rc"] == 0 and first["stats"]["db-1"]["changed"] >= 1, first
        [taken] = _results(first, "seawall.pgbackup.pg_backup")
        assert taken["changed"] and taken["backup"]["id"] and taken["backup_dir"] == str(backup_dir), taken
        again = _playbook(bin_dir, env, tmp_path, "backup", {})
        assert again["rc"] == 0 and again["stats"]["db-1"]["changed"] == 0, again  # max_age 20h: still fresh

        listing = subprocess.run([str(bin_dir / "ansible"), "db-1", "-i", "inventory.yml", "-m",
                                  "seawall.pgbackup.pg_backup_info", "-a",
                                  json.dumps({"backup_dir": str(backup_dir), "newest_only": True})],
                                 cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert listing.returncode == 0, listing.stdout + listing.stderr
        assert _problems(listing.stderr, KNOWN_DEPRECATIONS + (HARNESS_DEPRECATION,)) == [], listing.stderr
        info = json.loads(listing.stdout)["plays"][0]["tasks"][0]["hosts"]["db-1"]
        assert [b["id"] for b in info["backups"] if b["type"] == "full"] == [taken["backup"]["id"]], info

        pg15.create_db(copy)
        restored = _playbook(bin_dir, env, tmp_path, "restore", {"pgbackup_restore_target_url": pg15.url(copy)})
        assert restored["rc"] == 0 and restored["stats"]["db-1"]["changed"] == 1, restored
        for table in ("players", "maps"):
            assert pg15.scalar("SELECT count(*) FROM public.%s" % table, db=copy) == \
                pg15.scalar("SELECT count(*) FROM public.%s" % table, db=name), table
        print("highest core: install and six runs in %.1f s" % (time.monotonic() - started))
    finally:
        pg15.drop_db(copy)
        pg15.drop_db(name)
