"""The one runner for client tools: environment, stderr, exit description, kill and reap, no password in argv."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from seawall_pgbackup.config.connection import DbTarget
from seawall_pgbackup.core.errors import BackupError, ClientToolError, ConnectionFailed, RestoreError
from seawall_pgbackup.pg.binaries import any_psql
from seawall_pgbackup.pg.client import query
from seawall_pgbackup.pg.restore.archive import list_archive
from seawall_pgbackup.pg.runner import (PIPE, STDERR_LIMIT, ToolProcess, describe_exit, first_error, redact, run,
                                        tool_env)


def _python(code: str):
    return [sys.executable, "-c", code]


def _gone(pid: int) -> bool:
    """Reaped: no process (not even a zombie) left with this id."""
    return not os.path.exists("/proc/%d" % pid)


def _proc_view(pid: int):
    """argv and environment of a running process; empty for a moment while it is still in execve."""
    deadline = time.monotonic() + 10
    while True:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            argv = handle.read()
        if argv or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    with open("/proc/%d/environ" % pid, "rb") as handle:
        return argv, handle.read().split(b"\0")


@pytest.fixture(scope="module")
def psql() -> str:
    try:
        return any_psql()
    except BackupError as exc:
        if os.environ.get("CI"):
            pytest.fail("no psql in CI: %s" % exc)
        pytest.skip(str(exc))


def test_a_real_tool_runs_and_answers(psql):
    out = run([psql, "--version"], "psql", timeout=20)
    assert out.returncode == 0 and b"(PostgreSQL)" in out.stdout


def test_a_failing_tool_is_one_line_naming_it_its_status_and_its_first_error():
    code = "import sys; sys.stderr.write('starting\\npg_dump: error: query failed: boom\\nlater noise\\n'); sys.exit(3)"
    with pytest.raises(RestoreError) as caught:
        run(_python(code), "pg_dump", step="dump", error=RestoreError)
    assert str(caught.value) == "pg_dump failed (exit 3): pg_dump: error: query failed: boom"
    assert caught.value.step == "dump"
    out = run(_python(code), "pg_dump", check=False)  # unchecked: the caller reads the status itself
    assert out.returncode == 3 and "boom" in out.stderr


def test_a_killed_tool_names_the_signal():
    proc = ToolProcess(_python("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"), "pg_restore")
    with pytest.raises(BackupError, match=r"^pg_restore was killed by SIGKILL$"):
        proc.finish()
    assert _gone(proc.pid)


def test_lots_of_stderr_never_blocks_and_is_read_back_bounded():
    # 8 MiB of stderr: a pipe would fill at 64 KiB and hang the tool; the first error line still leads.
    code = ("import sys; sys.stderr.write('pg_restore: error: first problem\\n'); "
            "sys.stderr.write(('x' * 1023 + '\\n') * 8192); sys.stderr.write('the end\\n'); sys.exit(1)")
    started = time.monotonic()
    with ToolProcess(_python(code), "pg_restore") as proc:
        code_ = proc.wait(timeout=60)
        text = proc.stderr()
    assert code_ == 1 and time.monotonic() - started < 60
    assert len(text) <= STDERR_LIMIT + 100
    assert text.startswith("pg_restore: error: first problem") and text.rstrip().endswith("the end")
    assert "bytes of output left out" in text
    assert describe_exit("pg_restore", 1, text) == "pg_restore failed (exit 1): pg_restore: error: first problem"


def test_an_interrupted_caller_kills_and_reaps_the_tool():
    with pytest.raises(KeyboardInterrupt):
        with ToolProcess(_python("import time; time.sleep(60)"), "psql") as proc:
            pid = proc.pid
            assert not _gone(pid)
            raise KeyboardInterrupt
    assert _gone(pid)


def test_a_timeout_kills_and_reaps_the_tool():
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run(_python("import time; time.sleep(60)"), "psql", timeout=0.5)
    assert time.monotonic() - started < 10


def test_a_tool_that_cannot_start_is_one_line():
    with pytest.raises(ClientToolError, match=r"^cannot start pg_dump: No such file or directory$"):
        run(["/nonexistent/pg_dump", "--version"], "pg_dump")


def test_a_password_on_the_command_line_is_refused():
    for arg in ("--dbname=postgresql://app:s3cret@db/x", "postgres://app:s3cret@db", "host=db password=s3cret"):
        with pytest.raises(BackupError, match="refusing to start pg_dump with a password") as caught:
            run(["pg_dump", arg], "pg_dump")
        assert "s3cret" not in str(caught.value)


def test_messages_never_carry_a_password():
    stderr = 'pg_dump: error: could not connect to "postgresql://app:s3cret@db/x": password=hunter2 refused'
    line = describe_exit("pg_dump", 1, stderr)
    assert "s3cret" not in line and "hunter2" not in line and "postgresql://app@db/x" in line
    assert redact("postgresql://app@db/x") == "postgresql://app@db/x"


def test_first_error_drops_tool_and_libpq_prefixes():
    assert first_error('psql: error: connection to server at "h" (1.2.3.4), port 5 failed: FATAL:  no such role\n') \
        == "no such role"
    assert first_error("psql:<stdin>:1: NOTICE:  hello\npsql:<stdin>:1: ERROR:  syntax error at end of input\n") \
        == "ERROR:  syntax error at end of input"


def test_the_environment_names_the_application_and_a_passfile_never_the_password():
    target = DbTarget("postgresql://app:s3cret@db.example:5432/x")
    env = tool_env(target)
    try:
        assert env["PGAPPNAME"] == "seawall-pgbackup"
        assert "PGPASSWORD" not in env and "s3cret" not in "".join(env.values())
        assert oct(os.stat(env["PGPASSFILE"]).st_mode & 0o777) == "0o600"
    finally:
        target.close()
    assert tool_env()["PGAPPNAME"]


@pytest.mark.postgres
def test_a_real_tool_reaches_a_real_server_without_the_password_in_argv(pg15, psql):
    url = pg15.url("postgres")
    password = pg15.password
    assert password in url
    target = DbTarget(url)
    try:
        with ToolProcess([psql, "-X", "-q", "-A", "-t", "--no-password", "-d", target.url, "-c",
                          "SELECT current_setting('application_name') FROM pg_sleep(1)"],
                         "psql", target, stdout=PIPE) as proc:
            argv, environ = _proc_view(proc.pid)
            out = proc.stdout.read()
            proc.finish()
        assert password.encode() not in argv and b"postgresql://" in argv
        assert not any(item.startswith(b"PGPASSWORD=") for item in environ)
        assert any(item.startswith(b"PGPASSFILE=") for item in environ)
        assert out.strip() == b"seawall-pgbackup"  # scram authentication passed through the passfile
    finally:
        target.close()


@pytest.mark.postgres
def test_query_sends_statements_on_stdin_so_length_is_no_limit(pg15, psql):
    target = DbTarget(pg15.url("postgres"))
    try:
        # One argv string is limited to 128 KiB on Linux; a row count over thousands of tables is longer.
        long_sql = "SELECT 42 /* %s */" % ("x" * (300 * 1024))
        assert query(psql, target, long_sql) == [["42"]]
        with pytest.raises(BackupError) as caught:
            query(psql, target, "SELECT FROM nowhere_at_all")
        assert str(caught.value).startswith(target.describe() + ": ERROR:  relation \"nowhere_at_all\" does not exist")
        assert not isinstance(caught.value, ConnectionFailed)
        with pytest.raises(ConnectionFailed, match="^cannot connect to "):
            query(psql, DbTarget(pg15.url("postgres", password="wrong-password")), "SELECT 1")
    finally:
        target.close()


class _CountingReader:
    """A byte source that remembers how much of it was read."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.data[self.offset:self.offset + size if size >= 0 else None]
        self.offset += len(chunk)
        return chunk


@pytest.mark.postgres
def test_a_tool_fed_from_a_stream_lists_an_archive_and_the_stream_is_read_to_its_end(pg15):
    name = "runner_%s" % uuid.uuid4().hex[:8]
    pg15.create_db(name)
    try:
        pg15.psql("CREATE TABLE listed (id int)", db=name)
        target = DbTarget(pg15.url(name))
        dump = run([pg15.bin("pg_dump"), "--format=custom", "--compress=0", "--no-password",
                    "--dbname=" + target.url], "pg_dump", target).stdout
        target.close()
    finally:
        pg15.drop_db(name)
    assert dump.startswith(b"PGDMP")
    padded = dump + b"\0" * (8 << 20)  # far more than pg_restore --list reads
    source = _CountingReader(padded)
    entries = list_archive(pg15.bin("pg_restore"), source, "archive.dump")
    assert any(" TABLE public listed " in line for line in entries)
    assert all(not line.startswith(";") for line in entries)
    assert source.offset == len(padded)
    with pytest.raises(RestoreError, match=r"^pg_restore --list failed \(exit 1\): .*input file"):
        list_archive(pg15.bin("pg_restore"), _CountingReader(b"not an archive" * 100), "x.dump", RestoreError)
