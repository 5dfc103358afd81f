# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Streaming compressors whose output the standard ``gzip -d`` / ``zstd -d`` tools read."""

from __future__ import annotations

import gzip
import io
import zlib
from typing import BinaryIO, Optional

from ..core.errors import ConfigError

SUFFIX = {"gzip": ".gz", "zstd": ".zst", "none": ""}
DEFAULT_LEVEL = {"gzip": 6, "zstd": 3, "none": 0}
ISAL_DEFAULT_LEVEL = 2
ISAL_MAX_LEVEL = 3
GZIP_WBITS = 16 + zlib.MAX_WBITS  # the gzip container, not raw zlib


def _zstandard():
    try:
        import zstandard  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigError("zstd compression needs the Python package 'zstandard' (pip install zstandard)") from None
    return zstandard


class _Identity:
    def compress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


def _isal():
    """ISA-L's gzip-compatible deflate (package ``isal``): about ten times zlib's speed at level 2."""
    try:
        from isal import isal_zlib  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return isal_zlib


def compressor(algorithm: str, level: Optional[int] = None):
    """An object with ``compress(bytes)`` and ``flush()``, like zlib's."""
    if algorithm == "gzip":
        fast = _isal()
        # ISA-L knows levels 0-3; higher levels, or no ISA-L, take zlib. Both write standard gzip.
        if fast is not None and (level is None or level <= ISAL_MAX_LEVEL):
            return fast.compressobj(ISAL_DEFAULT_LEVEL if level is None else level, fast.DEFLATED, GZIP_WBITS)
        return zlib.compressobj(level or DEFAULT_LEVEL["gzip"], zlib.DEFLATED, GZIP_WBITS)
    level = level or DEFAULT_LEVEL[algorithm]
    if algorithm == "zstd":
        return _zstandard().ZstdCompressor(level=level, write_checksum=True).compressobj()
    if algorithm == "none":
        return _Identity()
    raise ConfigError("compression %r is not valid: use gzip, zstd or none" % algorithm)


def open_decompressed(path: str, algorithm: str) -> BinaryIO:
    """A readable binary stream of the original bytes of ``path``."""
    if algorithm == "gzip":
        try:
            from isal import igzip  # pylint: disable=import-outside-toplevel
        except ImportError:
            return gzip.open(path, "rb")  # type: ignore[return-value]
        return igzip.open(path, "rb")  # type: ignore[return-value]
    if algorithm == "zstd":
        raw = open(path, "rb")  # closed with the reader  # pylint: disable=consider-using-with
        return _zstandard().ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=True)
    if algorithm == "none":
        return open(path, "rb")  # pylint: disable=consider-using-with
    raise ConfigError("compression %r is not valid: use gzip, zstd or none" % algorithm)


class _Closing(io.BufferedReader):
    """A decompressing reader that also closes the stream under it."""

    def __init__(self, top, under) -> None:
        super().__init__(top, CHUNK_READ)  # type: ignore[arg-type]
        self._under = under

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._under.close()


CHUNK_READ = 1 << 20


def decompressing_reader(stream: BinaryIO, algorithm: str) -> BinaryIO:
    """Like ``open_decompressed`` but over an open binary stream (a decrypting reader, say); closing closes both."""
    if algorithm == "none":
        return stream
    if algorithm == "gzip":
        try:
            from isal import igzip  # pylint: disable=import-outside-toplevel
            top = igzip.IGzipFile(fileobj=stream, mode="rb")
        except ImportError:
            top = gzip.GzipFile(fileobj=stream, mode="rb")
        return _Closing(top, stream)  # type: ignore[return-value]
    if algorithm == "zstd":
        top = _zstandard().ZstdDecompressor().stream_reader(stream, read_across_frames=True, closefd=True)
        return _Closing(top, stream)  # type: ignore[return-value]
    stream.close()
    raise ConfigError("compression %r is not valid: use gzip, zstd or none" % algorithm)
