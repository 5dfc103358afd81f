"""Client tool selection by major version, with real executables standing in for installs."""

from __future__ import annotations

import os
import stat

import pytest

from seawall_pgbackup.pg.binaries import select_tools
from seawall_pgbackup.core.errors import ClientToolError

TOOLS = ("pg_dump", "pg_dumpall", "pg_restore", "psql")


def _install(root, version: str):
    bin_dir = root / ("pg" + version) / "bin"
    bin_dir.mkdir(parents=True)
    for tool in TOOLS:
        path = bin_dir / tool
        path.write_text("#!/bin/sh\necho '%s (PostgreSQL) %s'\n" % (tool, version))
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(bin_dir)


def test_configured_directory_is_used_alone(tmp_path):
    old = _install(tmp_path, "15.18")
    tools = select_tools(15, old)
    assert (tools.major, tools.version, tools.bin_dir) == (15, "15.18", old)
    with pytest.raises(ClientToolError) as err:
        select_tools(18, old)
    assert str(err.value) == ("client tools are older than the server (PostgreSQL 18): found pg_dump 15.18 in %s; "
                              "install the PostgreSQL 18 client or set BACKUP_PG_BIN_DIR" % old)


def test_lowest_adequate_major_on_path(tmp_path, monkeypatch):
    dirs = {v: _install(tmp_path, v) for v in ("14.2", "18.6", "16.4")}
    monkeypatch.setenv("PATH", os.pathsep.join(dirs.values()))
    # 14 is too old; of 16 and 18 the matching (lowest) major keeps archives readable by more restorers.
    assert select_tools(16).major == 16
    assert select_tools(17).bin_dir == dirs["18.6"]


def test_missing_directory_and_missing_companion(tmp_path):
    with pytest.raises(ClientToolError, match="is not a directory"):
        select_tools(15, str(tmp_path / "nope"))
    bin_dir = _install(tmp_path, "17.2")
    os.unlink(os.path.join(bin_dir, "pg_restore"))
    with pytest.raises(ClientToolError, match="pg_restore is missing beside pg_dump"):
        select_tools(17, bin_dir)
