"""The collection as a user gets it: the tarball `ansible-galaxy collection build` makes of this checkout, installed
into a collections path of its own (tests/integration/test_awx.py, test_ansible_core_versions.py, tests/packaging).

Both run outside the checkout: its ansible.cfg names .collections, where seawall.pgbackup is the checkout itself."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Mapping, Optional

REPO_ROOT = Path(__file__).resolve().parents[2]


def _galaxy(galaxy: Path, argv: list, cwd: Path, env: Optional[Mapping[str, str]]) -> str:
    proc = subprocess.run([str(galaxy), "collection", *[str(a) for a in argv]], cwd=cwd, capture_output=True,
                          text=True, check=False, env=dict(env) if env is not None else None, timeout=300)
    assert proc.returncode == 0, "ansible-galaxy collection %s: %s%s" % (argv[0], proc.stdout, proc.stderr)
    return proc.stdout


def build_collection(galaxy: Path, out: Path, env: Optional[Mapping[str, str]] = None) -> Path:
    """The tarball ``galaxy`` (an ansible-galaxy executable) builds of this checkout, in ``out``."""
    _galaxy(galaxy, ["build", "--output-path", out, REPO_ROOT], out, env)
    [tarball] = out.glob("seawall-pgbackup-*.tar.gz")
    return tarball


def install_collection(galaxy: Path, tarball: Path, collections: Path, *, dependencies_from: Optional[Path] = None,
                       env: Optional[Mapping[str, str]] = None) -> str:
    """Install ``tarball`` into the fresh collections path ``collections``; ansible-galaxy's output.

    Without ``dependencies_from`` the dependencies are not installed (--no-deps). With it (a collections path that
    holds them, such as an ansible package's site-packages), ansible-galaxy resolves galaxy.yml's dependencies
    offline against that path: an unmet version claim fails the install."""
    argv = ["install", "--force", "-p", collections, tarball]
    env = dict(os.environ if env is None else env)
    if dependencies_from is None:
        argv.insert(1, "--no-deps")
    else:
        argv.insert(1, "--offline")
        env["ANSIBLE_COLLECTIONS_PATH"] = "%s:%s" % (collections, dependencies_from)
    output = _galaxy(galaxy, argv, collections.parent, env)
    assert (collections / "ansible_collections" / "seawall" / "pgbackup" / "MANIFEST.json").exists(), output
    return output
