# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client tool output -> compression -> sha256 -> file, in constant memory.

The tool writes into a pipe and we compress in our own process, so dumping and
compressing run on two cores at once. The file is written under a ``.partial`` name and
only renamed once the tool exited cleanly and its output passed the sanity checks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from ..codec.compression import compressor
from ..codec.stored import StoredWriter
from ..core.errors import BackupError, file_error
from ..core.fsutil import create_private, describe_os_error, fsync_dir, remove_quietly
from ..core.testpoints import pause
from .runner import CHUNK, ToolProcess, describe_exit

__all__ = ["CHUNK", "EDGE", "StreamResult", "describe_exit", "stream_tool_to_file"]  # CHUNK, describe_exit: runner
EDGE = 4096  # bytes of the raw stream kept from its start and end for sanity checks


@dataclass
class StreamResult:
    path: str
    size: int
    sha256: str
    raw_size: int
    warnings: List[str]


def stream_tool_to_file(cmd: Sequence[str], env: Dict[str, str], dest: str, algorithm: str,
                        level: Optional[int], check_output: Callable[[bytes, bytes, int], Optional[str]],
                        tool: str, step: str, sealing=None, binding=None,
                        on_chunk: Optional[Callable[[bytes], None]] = None) -> StreamResult:
    """Run ``cmd``, store its compressed stdout at ``dest``; raise BackupError naming ``step`` on any fault.

    ``check_output(head, tail, raw_size)`` returns an error text for output that is empty or not
    what the tool should have written (a headerless dump is a failure even with exit 0).
    ``sealing`` (stored.Sealing): encrypt after compression; size and sha256 are of the stored bytes.
    ``binding`` (crypto.Binding, needed with ``sealing``): the repository, backup and file the bytes belong to.
    ``on_chunk``: sees every raw chunk (a base backup's tar is scanned for its backup_manifest as it passes).
    """
    partial = dest + ".partial"
    tool_run: Optional[ToolProcess] = None
    out = None
    source = None
    stored = None
    try:
        try:
            out = create_private(partial)
        except OSError as exc:
            raise file_error("cannot create " + describe_os_error(exc, partial), exc, step) from None
        read_end, write_end = os.pipe()
        _widen_pipe(write_end)
        try:
            source = os.fdopen(read_end, "rb", buffering=0)
            tool_run = ToolProcess(cmd, tool, env=env, stdout=write_end)
        finally:
            os.close(write_end)  # only the tool writes; EOF comes when it exits
        packer = compressor(algorithm, level)
        stored = StoredWriter(out, partial, step, sealing, binding)
        raw_size = 0
        head = b""
        tail = b""
        while True:
            chunk = source.read(CHUNK)
            if not chunk:
                break
            if len(head) < EDGE:
                head += chunk[:EDGE - len(head)]
            tail = (tail + chunk[-EDGE:])[-EDGE:]
            if not raw_size:
                pause(step + "-streaming")  # crash tests: the tool is running, its output half read
            raw_size += len(chunk)
            if on_chunk is not None:
                on_chunk(chunk)
            stored.write(packer.compress(chunk))
        stored.write(packer.flush())
        stored.close()
        stderr_lines = tool_run.finish(step)
        if any(": error:" in ln or ln.startswith("FATAL") for ln in stderr_lines):
            # exit 0 and an error line: the dump is not trusted
            raise BackupError(describe_exit(tool, 0, "\n".join(stderr_lines)), step=step)
        problem = check_output(head, tail, raw_size)
        if problem:
            raise BackupError("%s output rejected: %s" % (tool, problem), step=step)
        try:
            out.flush()
            os.fsync(out.fileno())
            out.close()
            os.replace(partial, dest)
            fsync_dir(os.path.dirname(dest) or ".")
        except OSError as exc:
            raise file_error("cannot finish " + describe_os_error(exc, dest), exc, step) from None
        return StreamResult(dest, stored.size, stored.sha256, raw_size, stderr_lines)
    except BaseException:
        if stored is not None:
            stored.abort()
        if tool_run is not None:
            tool_run.kill()
        if out is not None and not out.closed:
            try:
                out.close()
            except OSError:
                pass
        remove_quietly(partial)
        raise
    finally:
        if source is not None:
            source.close()
        if tool_run is not None:
            tool_run.close()


def _widen_pipe(fd: int) -> None:
    """A 1 MiB pipe instead of 64 KiB: fewer, larger reads and fewer stalls of the tool (Linux only)."""
    if fcntl is None or not hasattr(fcntl, "F_SETPIPE_SZ"):
        return
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, CHUNK)
    except OSError:
        pass  # over /proc/sys/fs/pipe-max-size for unprivileged users: the default pipe still works
