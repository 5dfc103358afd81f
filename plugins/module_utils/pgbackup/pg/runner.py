# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way the engine starts a PostgreSQL client tool (psql, pg_dump, pg_dumpall, pg_restore, ...).

Every spawn gets the same treatment:

- the environment comes from the DbTarget: the password in a private passfile (PGPASSFILE), PGAPPNAME
  set, never a password in argv (``ps`` shows argv to every user; a URL carrying one is refused);
- stderr goes to an unnamed temporary file, so a chatty tool can never block on a full pipe, and only
  a bounded part of it is read back into memory;
- a tool still running when its caller fails, times out or is interrupted is killed and reaped;
- a failure is one line naming the tool, its exit status or signal and its first meaningful error
  line (``describe_exit``), with any URL password removed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
from typing import IO, Any, List, Optional, Sequence, Type, Union

from ..config.connection import DbTarget
from ..core.errors import BackupError, ClientToolError

CHUNK = 1 << 20  # 1 MiB reads and writes when streaming into or out of a tool
STDERR_LIMIT = 256 * 1024  # bytes of stderr read back into memory: its head and its tail
APPLICATION_NAME = "seawall-pgbackup"

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
TimeoutExpired = subprocess.TimeoutExpired  # so callers need not import subprocess: this module is the only one

# postgresql://user:secret@host -> postgresql://user@host; key=value conninfo: password=secret -> password=***
_URL_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*):[^@/\s]*@", re.I)
_CONNINFO_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)
_TOOL_PREFIX = re.compile(r"^(?:[\w./-]*/)?(psql|pg_dump|pg_dumpall|pg_restore|pg_basebackup):\s")

Stream = Union[int, IO[Any], None]


def redact(text: str) -> str:
    """``text`` with passwords in URLs and conninfo strings removed."""
    return _CONNINFO_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1@", text))


def tool_env(target: Optional[DbTarget] = None) -> dict:
    """The child environment: the target's (passfile, connect timeout) or ours, always with PGAPPNAME."""
    env = target.env() if target is not None else dict(os.environ)
    env.setdefault("PGAPPNAME", APPLICATION_NAME)
    return env


def check_argv(cmd: Sequence[str], tool: str) -> None:
    """Refuse a command line that carries a password: the passfile is the only place for one."""
    for arg in cmd:
        if redact(arg) != arg:
            raise BackupError("refusing to start %s with a password on its command line" % tool)


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return "signal %d" % code


def meaningful_lines(stderr: str) -> List[str]:
    return [ln.strip() for ln in stderr.splitlines() if ln.strip()]


def describe_exit(tool: str, returncode: int, stderr: str) -> str:
    """One line: the tool, how it ended, and its first error line (else its last line)."""
    lines = meaningful_lines(stderr)
    errors = [ln for ln in lines if "error" in ln.lower() or "fatal" in ln.lower()]
    detail = redact((errors or lines or [""])[-1 if not errors else 0])
    if returncode < 0:
        return "%s was killed by %s%s" % (tool, _signal_name(-returncode), ": " + detail if detail else "")
    return "%s failed (exit %d): %s" % (tool, returncode, detail or "no error output")


def first_error(stderr: str) -> str:
    """The first FATAL/error line of a libpq tool's stderr, without the tool's and libpq's prefixes."""
    lines = meaningful_lines(stderr)
    text = lines[0] if lines else "unknown error"
    for line in lines:
        if "FATAL" in line or "error:" in line or "ERROR:" in line:
            text = line
            break
    text = _TOOL_PREFIX.sub("", text)
    text = re.sub(r"^psql:<stdin>:\d+: ", "", text)  # statements come on stdin (client.query)
    text = re.sub(r"^error: ", "", text)
    text = re.sub(r"^connection to server at .*? failed: ", "", text)
    return redact(text.replace("FATAL:  ", ""))


def read_bounded(handle: IO[bytes], limit: int = STDERR_LIMIT) -> str:
    """The text of a capture file, at most ``limit`` bytes of it: its head and its tail."""
    handle.flush()
    size = handle.seek(0, os.SEEK_END)
    handle.seek(0)
    if size <= limit:
        data = handle.read()
    else:
        half = limit // 2
        head = handle.read(half)
        handle.seek(size - half)
        tail = handle.read(half)
        data = head + b"\n[%d bytes of output left out]\n" % (size - 2 * half) + tail
    return data.decode("utf-8", "replace")


class ToolProcess:
    """One running client tool. Use it as a context manager: leaving the block on an error kills and reaps it.

    ``stdin``/``stdout`` take what subprocess.Popen takes (PIPE, DEVNULL, a file or a descriptor);
    stderr is always captured in a temporary file.
    """

    def __init__(self, cmd: Sequence[str], tool: str, target: Optional[DbTarget] = None, *,
                 env: Optional[dict] = None, stdin: Stream = DEVNULL, stdout: Stream = DEVNULL) -> None:
        self.tool = tool
        self.cmd = list(cmd)
        check_argv(self.cmd, tool)
        self._err = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(self.cmd, stdin=stdin, stdout=stdout, stderr=self._err,
                                         env=env if env is not None else tool_env(target))
        except OSError as exc:
            self._err.close()
            # a missing or broken tool is the machine's fault, not the backup's
            raise ClientToolError("cannot start %s: %s" % (tool, exc.strerror or exc)) from None
        self._stderr: Optional[str] = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stdin(self) -> IO[bytes]:
        return self.proc.stdin

    @property
    def stdout(self) -> IO[bytes]:
        return self.proc.stdout

    def __enter__(self) -> "ToolProcess":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.kill()
        self.close()

    def feed(self, source: IO[bytes], label: str, error: Type[BackupError] = BackupError,
             drain: bool = False) -> None:
        """Copy ``source`` into the tool's stdin and close it; a tool that stops reading is not an error here
        (its exit status says why), a source that cannot be read is: ``label`` is corrupt or truncated.

        ``drain``: read ``source`` to its end even after the tool stopped reading (so every byte is checked).
        """
        reading = True
        try:
            for chunk in iter(lambda: source.read(CHUNK), b""):
                if reading:
                    try:
                        self.proc.stdin.write(chunk)
                    except BrokenPipeError:
                        if not drain:
                            break
                        reading = False
        except (EOFError, OSError, ValueError) as exc:
            self.kill()
            raise error("%s is corrupt or truncated: %s" % (label, exc)) from None
        finally:
            self.close_stdin()

    def close_stdin(self) -> None:
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except (BrokenPipeError, ValueError):
                pass

    def wait(self, timeout: Optional[float] = None) -> int:
        """The exit status; on timeout the tool is killed and TimeoutExpired raised."""
        try:
            return self.proc.wait(timeout=timeout)
        except BaseException:
            self.kill()
            raise

    def stderr(self) -> str:
        """What the tool wrote on stderr (bounded); read once it has exited."""
        if self._stderr is None:
            self._stderr = read_bounded(self._err) if not self._err.closed else ""
        return self._stderr

    def finish(self, step: Optional[str] = None, error: Type[BackupError] = BackupError,
               timeout: Optional[float] = None) -> List[str]:
        """Wait; raise ``error`` (one line) unless the tool exited 0; else its stderr lines (warnings)."""
        code = self.wait(timeout)
        stderr = self.stderr()
        self.close()
        if code != 0:
            raise error(describe_exit(self.tool, code, stderr), step=step)
        return [redact(line) for line in meaningful_lines(stderr)]

    def kill(self) -> None:
        """Kill the tool if it still runs, and reap it (no zombie, no tool outliving its caller)."""
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except OSError:
                pass
            self.proc.wait()

    def close(self) -> None:
        self._err.close()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except (BrokenPipeError, ValueError):
                    pass


class ToolOutput:
    """A finished tool: exit status, stdout bytes, stderr text (bounded)."""

    def __init__(self, tool: str, returncode: int, stdout: bytes, stderr: str) -> None:
        self.tool = tool
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    def describe(self) -> str:
        return describe_exit(self.tool, self.returncode, self.stderr)


def run(cmd: Sequence[str], tool: str, target: Optional[DbTarget] = None, *, env: Optional[dict] = None,
        stdin: Optional[bytes] = None, timeout: Optional[float] = None, check: bool = True,
        step: Optional[str] = None, error: Type[BackupError] = BackupError) -> ToolOutput:
    """Run a tool to its end with ``stdin`` as its input and stdout captured (for small outputs: query
    results, listings).

    ``check``: raise ``error`` naming the tool unless it exits 0. On timeout the tool is killed and reaped
    and TimeoutExpired raised, so the caller can say what did not answer.
    """
    with ToolProcess(cmd, tool, target, env=env, stdin=DEVNULL if stdin is None else PIPE, stdout=PIPE) as proc:
        try:
            out, _unused = proc.proc.communicate(input=stdin, timeout=timeout)
        except BaseException:
            proc.kill()
            raise
        result = ToolOutput(tool, proc.proc.returncode, out or b"", proc.stderr())
    if check and result.returncode != 0:
        raise error(result.describe(), step=step)
    return result
