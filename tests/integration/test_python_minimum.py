"""A managed host or a command run with a Python older than the engine's minimum (3.9) fails in one line that
names the interpreter, not somewhere inside the engine (issue 13)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from seawall_pgbackup import MINIMUM_PYTHON
from tests.support.archiving import ENGINE

REPO = Path(__file__).resolve().parents[2]


def _older_python() -> str:
    """A Python 3.8 (the oldest ansible-core 2.19 runs modules on), else skip."""
    for candidate in sorted(glob.glob("/root/.pyenv/versions/3.8*/bin/python3.8")) + [shutil.which("python3.8")]:
        if candidate and subprocess.run([candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 8)"],
                                        capture_output=True, check=False).returncode == 0:
            return candidate  # (pyenv's shim answers "command not found" unless 3.8 is selected)
    pytest.skip("no Python 3.8 on this machine")
    return ""


def test_a_module_on_an_older_python_fails_in_one_line(tmp_path):
    assert MINIMUM_PYTHON == (3, 9)
    old = _older_python()
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="json",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible"), "localhost", "-c", "local", "-e",
                           "ansible_python_interpreter=%s" % old, "-m", "seawall.pgbackup.pg_backup_info", "-a",
                           "backup_dir=%s" % tmp_path], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert result["failed"] is True and "Traceback" not in json.dumps(result)
    assert result["msg"].startswith("seawall.pgbackup needs Python 3.9 or later on the managed host; %s is Python 3.8"
                                    % old), result["msg"]


def test_the_command_on_an_older_python_fails_in_one_line(tmp_path):
    old = _older_python()
    (tmp_path / "seawall_pgbackup").symlink_to(ENGINE)  # the engine alone on that Python's path
    proc = subprocess.run([old, "-m", "seawall_pgbackup.cli.run", "list"], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(tmp_path)), timeout=60, check=False)
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.strip() == "seawall-pgbackup: error: Python 3.9 or later is needed; %s is Python %s" % (
        old, proc.stderr.strip().rsplit(" ", 1)[1])
