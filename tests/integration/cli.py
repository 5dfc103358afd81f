"""Run the real ``seawall-pgbackup`` command (the installed package) the way a timer does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict, List, Optional

COMMAND = [sys.executable, "-m", "seawall_pgbackup.cli.run"]


def cli_env(database_url: Optional[str], backup_dir: str, **extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "BACKUP_", "DATABASE_URL"))}
    if database_url:
        env["DATABASE_URL"] = database_url
    env["BACKUP_DIR"] = str(backup_dir)
    env.update(extra)
    return env


def run(args: List[str], env: Dict[str, str], check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(COMMAND + list(args), env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)
    if check and proc.returncode != 0:
        raise AssertionError("seawall-pgbackup %s exited %d:\n%s%s" % (" ".join(args), proc.returncode, proc.stdout,
                                                                       proc.stderr))
    return proc


def create(env: Dict[str, str], kind: str) -> Dict[str, Any]:
    return json.loads(run(["create", "--type", kind, "--json"], env).stdout)


def listing(env: Dict[str, str]) -> List[Dict[str, Any]]:
    return json.loads(run(["list", "--json"], env).stdout)


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The single stderr line of a failed run (asserting it is a single line)."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0, proc.stdout
    assert len(lines) == 1, proc.stderr
    return lines[0]
