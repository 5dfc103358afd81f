"""The streaming pipeline: compressed, hashed, and never a partial file that looks complete."""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys

import pytest

from seawall_pgbackup.codec.compression import open_decompressed
from seawall_pgbackup.core.errors import BackupError
from seawall_pgbackup.ops.backup import check_cluster_sql, check_custom_archive
from seawall_pgbackup.pg.pipeline import stream_tool_to_file


def _emit(code: str):
    return [sys.executable, "-c", code]


def _payload_cmd(size: int, prefix: bytes = b"PGDMP"):
    return _emit("import sys,os; sys.stdout.buffer.write(%r + os.urandom(16) * (%d // 16))" % (prefix, size))


@pytest.mark.parametrize("algorithm", ["gzip", "zstd", "none"])
def test_round_trip_and_checksum(tmp_path, algorithm):
    dest = str(tmp_path / ("out.dump" + {"gzip": ".gz", "zstd": ".zst", "none": ""}[algorithm]))
    result = stream_tool_to_file(_payload_cmd(3 << 20), dict(os.environ), dest, algorithm, None,
                                 check_custom_archive, "pg_dump", "dump")
    assert os.path.getsize(dest) == result.size
    with open(dest, "rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == result.sha256
    with open_decompressed(dest, algorithm) as src:
        raw = src.read()
    assert raw.startswith(b"PGDMP") and len(raw) == result.raw_size
    assert oct(os.stat(dest).st_mode & 0o777) == "0o600"
    assert not os.path.exists(dest + ".partial")


def test_gzip_output_is_read_by_the_gzip_tool(tmp_path):
    dest = str(tmp_path / "x.dump.gz")
    stream_tool_to_file(_payload_cmd(100000), dict(os.environ), dest, "gzip", 1, check_custom_archive, "pg_dump", "dump")
    out = subprocess.run(["gzip", "-dc", dest], capture_output=True, check=True)
    assert out.stdout.startswith(b"PGDMP")
    with gzip.open(dest) as handle:
        assert handle.read() == out.stdout


@pytest.mark.parametrize("cmd,message", [
    (_emit("pass"), "pg_dump output rejected: the dump is empty"),
    (_emit("import sys; sys.stdout.write('hello')"), "pg_dump output rejected: the dump has no custom-format header"),
    (_emit("import sys; sys.stdout.write('PGDMP'); sys.stderr.write('pg_dump: error: query failed: boom\\n'); "
           "sys.exit(1)"), "pg_dump failed (exit 1): pg_dump: error: query failed: boom"),
    (_emit("import sys; sys.stdout.write('PGDMP'); sys.stderr.write('pg_dump: error: lost\\n')"),
     "pg_dump failed (exit 0): pg_dump: error: lost"),
    (_emit("import os, signal, sys; sys.stdout.buffer.write(b'PGDMP' * 1000); sys.stdout.flush(); "
           "os.kill(os.getpid(), signal.SIGKILL)"), "pg_dump was killed by SIGKILL"),
])
def test_failures_leave_nothing_behind(tmp_path, cmd, message):
    dest = str(tmp_path / "x.dump.gz")
    with pytest.raises(BackupError) as err:
        stream_tool_to_file(cmd, dict(os.environ), dest, "gzip", None, check_custom_archive, "pg_dump", "dump")
    assert str(err.value).startswith(message)
    assert err.value.step == "dump"
    assert os.listdir(tmp_path) == []


def test_globals_must_be_complete(tmp_path):
    dest = str(tmp_path / "g.sql.gz")
    truncated = _emit("print('--\\n-- PostgreSQL database cluster dump\\n--\\nCREATE ROLE a;')")
    with pytest.raises(BackupError, match="truncated"):
        stream_tool_to_file(truncated, dict(os.environ), dest, "gzip", None, check_cluster_sql, "pg_dumpall", "globals")
    assert os.listdir(tmp_path) == []


def test_existing_file_is_never_overwritten(tmp_path):
    dest = str(tmp_path / "x.dump")
    (tmp_path / "x.dump.partial").write_bytes(b"another run")
    with pytest.raises(BackupError, match="cannot create"):
        stream_tool_to_file(_payload_cmd(10), dict(os.environ), dest, "none", None, check_custom_archive,
                            "pg_dump", "dump")
