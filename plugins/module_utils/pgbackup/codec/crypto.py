# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Authenticated streaming encryption of stored backup files, in constant memory.

Two modes:

* ``aes-256-gcm``: a symmetric 32-byte key, the chunked format specified in docs/encryption.md
  (header: magic, version, key id, chunk size, nonce prefix, and in version 2 the file's binding; per
  chunk a GCM tag; the nonce is prefix || counter and the whole header plus a final-chunk flag are the
  associated data, so changed, reordered, dropped or truncated chunks all fail authentication, and so
  does a file moved under another backup, name or repository). Needs ``cryptography``.
* ``age``: age's own format for X25519 recipients (``pyrage``): backup hosts hold only the public
  recipients; the identity (private key) is needed only to read. Bound files start their plaintext
  with a 40-byte prefix: ``SWPGBND1`` + sha256 of the binding's context.

A ``Binding`` (repository id, backup id, file name) ties the bytes of a file to the one place in the
one manifest that names them: a file copied over another backup's file, or replayed from an older
backup, fails authentication even when the manifest's sha256 was edited to match.

Writers take the stored-byte sink (``write(bytes)``) and offer ``write``/``close``/``abort``;
readers wrap a raw binary file and return a readable binary stream of the plaintext.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import struct
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, List, Optional, Sequence

from ..core.errors import BackupError, ConfigError

AES_MODE = "aes-256-gcm"
AGE_MODE = "age"
MODES = (AES_MODE, AGE_MODE)
SUFFIX = {AES_MODE: ".enc", AGE_MODE: ".age"}

MAGIC = b"SWPGAES"          # 7 bytes, then one version byte
VERSION = 2                 # written; version 1 (no binding) is still read
VERSIONS = (1, 2)
KEY_ID_BYTES = 8
NONCE_PREFIX_BYTES = 8
TAG_BYTES = 16
HEADER = struct.Struct(">7sB8sI8s")  # magic, version, key id, chunk size, nonce prefix: 28 bytes
DEFAULT_CHUNK = 1 << 20
MIN_CHUNK = 1 << 10
MAX_CHUNK = 1 << 26
KEY_BYTES = 32
_KEY_ID_LABEL = b"seawall-pgbackup key id v1"
CONTEXT_LENGTH = struct.Struct(">H")  # version 2: the binding context's length follows the 28 fixed bytes
MAX_CONTEXT = 1024
BINDING_LABEL = b"seawall-pgbackup binding v1\0"
AGE_BINDING_MAGIC = b"SWPGBND1"
AGE_PREFIX_BYTES = len(AGE_BINDING_MAGIC) + 32  # magic + sha256(context): 40 bytes

# The manifest's ``encryption.format``: the bound formats are what new files are written in.
AES_FORMAT_V1 = "seawall-aes-256-gcm-chunked-v1"
AES_FORMAT = "seawall-aes-256-gcm-chunked-v2"
AGE_FORMAT_V1 = "age-encryption.org/v1"
AGE_FORMAT = "age-encryption.org/v1+seawall-binding-v1"
BOUND_FORMATS = frozenset({AES_FORMAT, AGE_FORMAT})
KNOWN_FORMATS = {AES_MODE: (None, AES_FORMAT_V1, AES_FORMAT), "age-x25519": (None, AGE_FORMAT_V1, AGE_FORMAT)}


class AuthenticationFailed(ValueError):
    """The stored bytes are not what was encrypted: tampered, truncated, reordered or another key."""


@dataclass(frozen=True)
class Binding:
    """Where a file belongs: the repository id, the backup id and the file's name in that backup."""

    repository: str
    backup_id: str
    name: str

    def __post_init__(self) -> None:
        for value in (self.repository, self.backup_id, self.name):
            if not isinstance(value, str) or "\0" in value:
                raise ValueError("a binding field must be a string without NUL: %r" % (value,))

    def context(self) -> bytes:
        """The bytes the encryption authenticates (the aes header carries them; age hashes them)."""
        return BINDING_LABEL + b"\0".join(v.encode("utf-8") for v in (self.repository, self.backup_id, self.name))

    def describe(self) -> str:
        return "backup %s file %s of repository %s" % (self.backup_id, self.name, self.repository)

    @classmethod
    def from_context(cls, context: bytes) -> Optional["Binding"]:
        """The binding a context names, or None when it is not one of ours (for messages only)."""
        if not context.startswith(BINDING_LABEL):
            return None
        try:
            fields = context[len(BINDING_LABEL):].decode("utf-8").split("\0")
        except UnicodeDecodeError:
            return None
        return cls(*fields) if len(fields) == 3 else None


def is_bound(encryption: Any) -> bool:
    """True when a manifest's encryption record (a record, a dict or None) says its files carry a binding."""
    if not encryption:
        return False
    fmt = encryption.get("format") if isinstance(encryption, dict) else getattr(encryption, "format", None)
    return fmt in BOUND_FORMATS


def age_prefix(binding: Binding) -> bytes:
    return AGE_BINDING_MAGIC + hashlib.sha256(binding.context()).digest()


def _bound_elsewhere(label: str, found: Optional[Binding], binding: Binding) -> "AuthenticationFailed":
    where = found.describe() if found else "something else"
    return AuthenticationFailed("%s is bound to %s, not %s (moved or replayed)" % (label, where, binding.describe()))


def _aesgcm():
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigError("aes-256-gcm encryption needs the Python package 'cryptography' "
                          "(pip install cryptography)") from None
    return AESGCM


def _pyrage():
    try:
        import pyrage  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigError("age encryption needs the Python package 'pyrage' (pip install pyrage)") from None
    return pyrage


# ----------------------------------------------------------------------------- key ids

def aes_key_id(key: bytes) -> str:
    """16 hex digits naming a symmetric key without revealing it (HMAC of a fixed label)."""
    return hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:2 * KEY_ID_BYTES]


def age_key_id(recipient: str) -> str:
    """16 hex digits naming an age X25519 recipient (and so the identity that matches it)."""
    return hashlib.sha256(recipient.strip().encode("ascii")).hexdigest()[:2 * KEY_ID_BYTES]


def generate_aes_key() -> bytes:
    return os.urandom(KEY_BYTES)


# ----------------------------------------------------------------------------- aes-256-gcm, chunked

def _nonce(prefix: bytes, counter: int) -> bytes:
    return prefix + struct.pack(">I", counter)


class AesWriter:
    """Encrypts what is written into ``sink`` in chunks of ``chunk_size`` plaintext bytes."""

    def __init__(self, sink: Callable[[bytes], object], key: bytes, chunk_size: int = DEFAULT_CHUNK,
                 binding: Optional[Binding] = None) -> None:
        if len(key) != KEY_BYTES:
            raise ConfigError("an aes-256-gcm key has %d bytes, this one %d" % (KEY_BYTES, len(key)))
        if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
            raise ConfigError("chunk size %d is not valid: use %d to %d" % (chunk_size, MIN_CHUNK, MAX_CHUNK))
        self._aead = _aesgcm()(key)
        self._sink = sink
        self._chunk = chunk_size
        self._prefix = os.urandom(NONCE_PREFIX_BYTES)
        # With a binding: version 2, the context in the header and so in every chunk's associated data.
        version = VERSION if binding is not None else 1
        self._header = HEADER.pack(MAGIC, version, bytes.fromhex(aes_key_id(key)), chunk_size, self._prefix)
        if binding is not None:
            context = binding.context()
            if len(context) > MAX_CONTEXT:
                raise ValueError("the binding of %s is longer than %d bytes" % (binding.describe(), MAX_CONTEXT))
            self._header += CONTEXT_LENGTH.pack(len(context)) + context
        self._buffer = bytearray()
        self._counter = 0
        self._closed = False
        sink(self._header)

    def _emit(self, plain: bytes, final: bool) -> None:
        if self._counter >= 0xFFFFFFFF:
            raise ValueError("too many chunks for one file")
        aad = self._header + (b"\x01" if final else b"\x00")
        sealed = self._aead.encrypt(_nonce(self._prefix, self._counter), plain, aad)
        self._counter += 1
        self._sink(sealed)

    def write(self, data: bytes) -> int:
        self._buffer += data
        # Keep at least one byte back: the last chunk is only known at close().
        while len(self._buffer) > self._chunk:
            plain = bytes(self._buffer[:self._chunk])
            del self._buffer[:self._chunk]
            self._emit(plain, False)
        return len(data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._emit(bytes(self._buffer), True)
        self._buffer = bytearray()

    def abort(self) -> None:
        self._closed = True
        self._buffer = bytearray()


def read_aes_header(raw: BinaryIO) -> tuple:
    """``(key_id_hex, chunk_size, header_bytes)`` of a stored file; AuthenticationFailed when it is not one.

    ``header_bytes`` is the whole header: the 28 fixed bytes, and in version 2 the context's length and
    the context (``header_context`` returns it)."""
    header = _read_full(raw, HEADER.size)
    if len(header) < HEADER.size:
        raise AuthenticationFailed("the file is too short to be aes-256-gcm encrypted (truncated)")
    magic, version, key_id, chunk_size, _prefix = HEADER.unpack(header)
    if magic != MAGIC:
        raise AuthenticationFailed("the file is not seawall aes-256-gcm encrypted (no %s header)" % MAGIC.decode())
    if version not in VERSIONS:
        raise AuthenticationFailed("encryption format version %d is not known to this version (knows %s)"
                                   % (version, ", ".join(str(v) for v in VERSIONS)))
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise AuthenticationFailed("the header's chunk size %d is not valid (tampered)" % chunk_size)
    if version >= 2:
        length_bytes = _read_full(raw, CONTEXT_LENGTH.size)
        if len(length_bytes) < CONTEXT_LENGTH.size:
            raise AuthenticationFailed("the file is too short to hold its binding (truncated)")
        (length,) = CONTEXT_LENGTH.unpack(length_bytes)
        if not 0 < length <= MAX_CONTEXT:
            raise AuthenticationFailed("the header's binding length %d is not valid (tampered)" % length)
        context = _read_full(raw, length)
        if len(context) < length:
            raise AuthenticationFailed("the file is too short to hold its binding (truncated)")
        header += length_bytes + context
    return key_id.hex(), chunk_size, header


def header_context(header: bytes) -> Optional[bytes]:
    """The binding context of a whole header from ``read_aes_header``; None for version 1."""
    if header[7] < 2:
        return None
    return header[HEADER.size + CONTEXT_LENGTH.size:]


def check_aes_binding(header: bytes, binding: Optional[Binding], label: str) -> None:
    """The header's binding is exactly ``binding`` (None: the file must be version 1, unbound)."""
    context = header_context(header)
    if binding is None:
        if context is not None:
            raise AuthenticationFailed("%s carries a binding (format version 2) but its manifest records the "
                                       "unbound format (replaced or tampered)" % label)
        return
    if context is None:
        raise AuthenticationFailed("%s is in the unbound format version 1 but its manifest records a bound one "
                                   "(replaced or tampered)" % label)
    if not hmac.compare_digest(context, binding.context()):
        raise _bound_elsewhere(label, Binding.from_context(context), binding)


def _read_full(raw: BinaryIO, size: int) -> bytes:
    parts: List[bytes] = []
    left = size
    while left > 0:
        data = raw.read(left)
        if not data:
            break
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


class AesReader(io.RawIOBase):
    """The plaintext of a chunked aes-256-gcm file; only authenticated chunks are ever returned."""

    def __init__(self, raw: BinaryIO, key: bytes, label: str = "file", binding: Optional[Binding] = None) -> None:
        super().__init__()
        self._raw = raw
        self._label = label
        key_id, chunk_size, header = read_aes_header(raw)
        check_aes_binding(header, binding, label)
        if key_id != aes_key_id(key):
            raise AuthenticationFailed("%s needs key id %s, the key given is %s" % (label, key_id, aes_key_id(key)))
        self._aead = _aesgcm()(key)
        self._header = header
        self._prefix = header[HEADER.size - NONCE_PREFIX_BYTES:HEADER.size]
        self._block = chunk_size + TAG_BYTES
        self._pending: Optional[bytes] = _read_full(raw, self._block)
        self._counter = 0
        self._plain = b""
        self._offset = 0

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> bool:
        block = self._pending
        if block is None:
            return False
        following = _read_full(self._raw, self._block) if len(block) == self._block else b""
        final = not following
        if len(block) < TAG_BYTES:
            raise AuthenticationFailed("%s is truncated (chunk %d is incomplete)" % (self._label, self._counter))
        aad = self._header + (b"\x01" if final else b"\x00")
        try:
            plain = self._aead.decrypt(_nonce(self._prefix, self._counter), block, aad)
        except Exception:  # cryptography's InvalidTag; nothing of this chunk is released
            raise AuthenticationFailed("%s fails authentication at chunk %d: tampered, truncated or reordered "
                                       "(key id %s)" % (self._label, self._counter, self._header[8:16].hex())) from None
        self._counter += 1
        self._pending = None if final else following
        self._plain = plain
        self._offset = 0
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        while self._offset >= len(self._plain):
            if not self._next_chunk():
                return 0
        count = min(len(view), len(self._plain) - self._offset)
        view[:count] = self._plain[self._offset:self._offset + count]
        self._offset += count
        return count

    def close(self) -> None:
        if not self.closed:
            try:
                self._raw.close()
            finally:
                super().close()


# ----------------------------------------------------------------------------- age

def parse_age_recipient(text: str, where: str = "BACKUP_ENCRYPTION_RECIPIENTS"):
    value = text.strip()
    if not value.startswith("age1"):
        raise ConfigError("%s: %r is not an age X25519 recipient (age1...)" % (where, value))
    try:
        return _pyrage().x25519.Recipient.from_str(value)
    except ConfigError:
        raise
    except Exception:  # pylint: disable=broad-except
        raise ConfigError("%s: %r is not a valid age X25519 recipient" % (where, value)) from None


def parse_age_identities(text: str, where: str) -> list:
    """Every ``AGE-SECRET-KEY-1...`` line of an identity file (age's own format; # comments)."""
    x25519 = _pyrage().x25519
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(x25519.Identity.from_str(line))
        except Exception:  # pylint: disable=broad-except
            # Never echo the line: it may be a secret with a typo.
            raise ConfigError("%s line %d is not an age identity (AGE-SECRET-KEY-1...)" % (where, number)) from None
    if not found:
        raise ConfigError("%s holds no age identity (AGE-SECRET-KEY-1...)" % where)
    return found


class _PipeFeeder:
    """Run ``work(reader_or_writer)`` in a thread on one end of a pipe; errors surface at ``close``."""

    def __init__(self) -> None:
        self.errors: List[BaseException] = []
        self.thread: Optional[threading.Thread] = None

    def start(self, work: Callable[[], None]) -> None:
        def run() -> None:
            try:
                work()
            except BaseException as exc:  # pylint: disable=broad-except
                self.errors.append(exc)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()


class _SinkFile(io.RawIOBase):
    def __init__(self, sink: Callable[[bytes], object]) -> None:
        super().__init__()
        self._sink = sink

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._sink(bytes(data))
        return len(data)


class AgeWriter:
    """age-encrypts what is written, streaming: pyrage reads a pipe in a thread and writes into ``sink``."""

    def __init__(self, sink: Callable[[bytes], object], recipients: Sequence,
                 binding: Optional[Binding] = None) -> None:
        pyrage = _pyrage()
        read_fd, write_fd = os.pipe()
        self._pipe = os.fdopen(write_fd, "wb", buffering=0)
        source = os.fdopen(read_fd, "rb")
        target = _SinkFile(sink)
        self._feeder = _PipeFeeder()

        def work() -> None:
            try:
                pyrage.encrypt_io(source, target, list(recipients))
            finally:
                source.close()  # a writer blocked on a dead reader gets EPIPE instead of hanging

        self._feeder.start(work)
        self._closed = False
        if binding is not None:
            self.write(age_prefix(binding))  # the first plaintext bytes: age authenticates them with the rest

    def write(self, data: bytes) -> int:
        try:
            self._pipe.write(data)
        except BrokenPipeError:
            self._finish()
            raise OSError("age encryption stopped") from None
        return len(data)

    def _finish(self) -> None:
        if not self._pipe.closed:
            try:
                self._pipe.close()
            except BrokenPipeError:
                pass
        self._feeder.join()
        if self._feeder.errors:
            error = self._feeder.errors[0]
            if isinstance(error, (OSError, BackupError)):
                raise error  # the sink's own failure (a full disk, say) keeps its message
            raise OSError("age encryption failed: %s" % error)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._finish()

    def abort(self) -> None:
        self._closed = True
        try:
            self._finish()
        except (OSError, ValueError):
            pass


class AgeReader(io.RawIOBase):
    """The plaintext of an age file, streaming: pyrage decrypts in a thread into a pipe we read.

    With a ``binding`` the plaintext must start with that binding's 40-byte prefix, which is checked and
    stripped before anything is released; without one it must not start with a binding prefix at all."""

    def __init__(self, raw: BinaryIO, identities: Sequence, label: str, key_ids: Sequence[str],
                 binding: Optional[Binding] = None) -> None:
        super().__init__()
        pyrage = _pyrage()
        read_fd, write_fd = os.pipe()
        self._source = os.fdopen(read_fd, "rb", buffering=0)
        target = os.fdopen(write_fd, "wb")
        self._raw = raw
        self._label = label
        self._key_ids = list(key_ids)
        self._feeder = _PipeFeeder()
        self._head = b""

        def work() -> None:
            try:
                pyrage.decrypt_io(raw, target, list(identities))
            finally:
                try:
                    target.close()
                except OSError:
                    pass

        self._feeder.start(work)
        try:
            self._check_binding(binding)
        except BaseException:
            self.close()
            raise

    def _read_head(self, size: int) -> bytes:
        parts: List[bytes] = []
        left = size
        while left > 0:
            data = self._source.read(left)
            if not data:
                self._failed()  # a decryption error explains a short head better than "too short"
                break
            parts.append(data)
            left -= len(data)
        return b"".join(parts)

    def _check_binding(self, binding: Optional[Binding]) -> None:
        if binding is None:
            # An unbound record fed a bound file: refuse rather than release the prefix as data.
            self._head = self._read_head(len(AGE_BINDING_MAGIC))
            if self._head == AGE_BINDING_MAGIC:
                raise AuthenticationFailed("%s carries a binding but its manifest records the unbound format "
                                           "(replaced or tampered)" % self._label)
            return
        head = self._read_head(AGE_PREFIX_BYTES)
        if len(head) < AGE_PREFIX_BYTES or not head.startswith(AGE_BINDING_MAGIC):
            raise AuthenticationFailed("%s carries no binding but its manifest records a bound format (replaced "
                                       "or tampered)" % self._label)
        if not hmac.compare_digest(head, age_prefix(binding)):
            raise AuthenticationFailed("%s is bound to another backup, file or repository, not %s (moved or "
                                       "replayed)" % (self._label, binding.describe()))

    def _failed(self) -> None:
        self._feeder.join()
        if self._feeder.errors:
            error = self._feeder.errors[0]
            raise AuthenticationFailed("%s fails age decryption (%s; key id %s): tampered, truncated or another "
                                       "key" % (self._label, error, ", ".join(self._key_ids))) from None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._head:
            view = memoryview(buffer).cast("B")
            count = min(len(view), len(self._head))
            view[:count] = self._head[:count]
            self._head = self._head[count:]
            return count
        count = self._source.readinto(buffer)
        if count == 0:
            self._failed()
        return count or 0

    def close(self) -> None:
        if not self.closed:
            self._source.close()  # the decrypting thread gets EPIPE and ends
            self._feeder.join()
            self._raw.close()
            super().close()
