# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Streaming compressors whose output the standard ``gzip -d`` / ``zstd -d`` tools read."""

from __future__ import annotations

import gzip
import zlib
from typing import BinaryIO, Optional

from .errors import BackupError

SUFFIX = {"gzip": ".gz", "zstd": ".zst", "none": ""}
DEFAULT_LEVEL = {"gzip": 6, "zstd": 3, "none": 0}


def _zstandard():
    try:
        import zstandard  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise BackupError("zstd compression needs the Python package 'zstandard' (pip install zstandard)") from None
    return zstandard


class _Identity:
    def compress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


def compressor(algorithm: str, level: Optional[int] = None):
    """An object with ``compress(bytes)`` and ``flush()``, like zlib's."""
    level = level or DEFAULT_LEVEL[algorithm]
    if algorithm == "gzip":
        return zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip container
    if algorithm == "zstd":
        return _zstandard().ZstdCompressor(level=level, write_checksum=True).compressobj()
    if algorithm == "none":
        return _Identity()
    raise BackupError("compression %r is not valid: use gzip, zstd or none" % algorithm)


def open_decompressed(path: str, algorithm: str) -> BinaryIO:
    """A readable binary stream of the original bytes of ``path``."""
    if algorithm == "gzip":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if algorithm == "zstd":
        raw = open(path, "rb")  # closed with the reader  # pylint: disable=consider-using-with
        return _zstandard().ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=True)
    if algorithm == "none":
        return open(path, "rb")  # pylint: disable=consider-using-with
    raise BackupError("compression %r is not valid: use gzip, zstd or none" % algorithm)


def decompression_command(algorithm: str, path: str) -> str:
    """The shell command that restores a file's original bytes without seawall (for docs and output)."""
    return {"gzip": "gzip -dc %s" % path, "zstd": "zstd -dc %s" % path, "none": "cat %s" % path}[algorithm]
