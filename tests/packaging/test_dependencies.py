"""Collections galaxy.yml does not require: the roles that need them say which and how to install them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"


def _play(tmp_path: Path, tasks: list, only_this_collection: bool) -> subprocess.CompletedProcess:
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"))
    if only_this_collection:  # the ansible package's bundled collections are on sys.path: not scanned
        env["ANSIBLE_COLLECTIONS_SCAN_SYS_PATH"] = "false"
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, check=False)


def test_galaxy_yml_requires_what_the_default_roles_use_and_no_more():
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    assert set(galaxy["dependencies"]) == {"community.postgresql", "community.general"}
    used = set()
    for folder in ("roles/tooling", "roles/monitoring", "roles/wal_archive", "plugins", "playbooks"):
        for path in (ROOT / folder).rglob("*.y*ml"):
            text = path.read_text()
            used |= {name for name in ("community.windows", "ansible.windows", "amazon.aws", "community.aws",
                                       "azure.azcollection", "google.cloud") if name + "." in text}
    assert used <= {"amazon.aws", "community.aws", "azure.azcollection", "google.cloud"}, used  # cloud_setup only
    windows = {c["name"] for c in yaml.safe_load((ROOT / "requirements-windows.yml").read_text())["collections"]}
    cloud = {c["name"] for c in yaml.safe_load((ROOT / "requirements-cloud.yml").read_text())["collections"]}
    assert windows == {"ansible.windows", "community.windows"}
    assert cloud == {"amazon.aws", "community.aws", "azure.azcollection", "google.cloud"}


def test_missing_collections_names_what_is_not_installed(tmp_path):
    task = {"ansible.builtin.debug": {"msg": "MISSING={{ ['community.windows', 'community.postgresql', "
                                             "'seawall.pgbackup'] | seawall.pgbackup.missing_collections | join(',') }}"}}
    alone = _play(tmp_path, [task], only_this_collection=True)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    assert "MISSING=community.windows,community.postgresql" in alone.stdout, alone.stdout
    everything = _play(tmp_path, [task], only_this_collection=False)
    assert everything.returncode == 0 and "MISSING=" in everything.stdout, everything.stdout
    assert "MISSING=community" not in everything.stdout
    bad = _play(tmp_path, [{"ansible.builtin.debug": {"msg": "{{ ['nope'] | seawall.pgbackup.missing_collections }}"}}],
                only_this_collection=False)
    assert bad.returncode != 0 and "'nope' is not a collection name" in bad.stdout, bad.stdout
