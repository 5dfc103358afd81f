"""Encryption: the chunked aes-256-gcm format (v1 and the bound v2), age streaming, keys, config, and the
documented decrypt script (tests/unit/test_binding.py: what the binding refuses)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from seawall_pgbackup.codec.crypto import (AGE_PREFIX_BYTES, HEADER, TAG_BYTES, AesReader, AesWriter, AgeReader,
                                           AgeWriter, AuthenticationFailed, Binding, aes_key_id, age_key_id,
                                           age_prefix)
from seawall_pgbackup.codec.keyring import KeyMissing, load_keyring, write_key_file
from seawall_pgbackup.codec.stored import open_decrypted, sealing_for
from seawall_pgbackup.config.settings import load_config
from seawall_pgbackup.core.errors import BackupError, ConfigError
from seawall_pgbackup.pg.pipeline import stream_tool_to_file

REPO = Path(__file__).resolve().parents[2]
CHUNK = 1024


BINDING = Binding("default", "full-app-20261126T020000Z", "full-app-20261126T020000Z.dump.gz.enc")
BOUND_HEADER = HEADER.size + 2 + len(BINDING.context())


def _seal(data: bytes, key: bytes, chunk: int = CHUNK, pieces: int = 700, binding=None) -> bytes:
    out = io.BytesIO()
    writer = AesWriter(out.write, key, chunk, binding=binding)
    for start in range(0, len(data), pieces):
        writer.write(data[start:start + pieces])
    writer.close()
    return out.getvalue()


def _open(blob: bytes, key: bytes, binding=None) -> bytes:
    return io.BufferedReader(AesReader(io.BytesIO(blob), key, binding=binding)).read()


KEY = os.urandom(32)


@pytest.mark.parametrize("bound", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17])
def test_aes_round_trip_at_every_chunk_boundary(size, bound):
    data = os.urandom(size)
    binding = BINDING if bound else None
    blob = _seal(data, KEY, binding=binding)
    chunks = max(1, -(-size // CHUNK))
    assert len(blob) == (BOUND_HEADER if bound else HEADER.size) + size + chunks * TAG_BYTES
    assert _open(blob, KEY, binding) == data


def test_aes_header_names_the_key_id_and_each_file_gets_its_own_nonce_prefix():
    first, second = _seal(b"same", KEY), _seal(b"same", KEY)
    assert first[8:16].hex() == aes_key_id(KEY)
    assert first[:7] == b"SWPGAES" and first[7] == 1
    assert first[20:28] != second[20:28] and first[28:] != second[28:]
    bound = _seal(b"same", KEY, binding=BINDING)
    assert bound[7] == 2 and bound[8:16].hex() == aes_key_id(KEY)
    assert bound[28:30] == len(BINDING.context()).to_bytes(2, "big") and bound[30:BOUND_HEADER] == BINDING.context()


_PLACES = ["magic", "version", "key id", "chunk size", "nonce prefix", "first chunk", "tag", "last byte"]


@pytest.mark.parametrize("where,bound", [(w, False) for w in _PLACES]
                         + [(w, True) for w in _PLACES + ["context length", "context"]])
def test_aes_any_tampered_byte_fails_authentication(where, bound):
    data = os.urandom(3 * CHUNK + 100)
    binding = BINDING if bound else None
    blob = bytearray(_seal(data, KEY, binding=binding))
    header = BOUND_HEADER if bound else HEADER.size
    offset = {"magic": 0, "version": 7, "key id": 9, "chunk size": 18, "nonce prefix": 22, "context length": 29,
              "context": 40, "first chunk": header + 12, "tag": header + CHUNK + 3, "last byte": len(blob) - 1}[where]
    blob[offset] ^= 0x01
    with pytest.raises(AuthenticationFailed):
        _open(bytes(blob), KEY, binding)


def test_aes_truncation_reordering_and_dropping_fail():
    data = os.urandom(4 * CHUNK)
    blob = _seal(data, KEY)
    block = CHUNK + TAG_BYTES
    head, chunks = blob[:HEADER.size], [blob[HEADER.size + i * block:HEADER.size + (i + 1) * block] for i in range(4)]
    assert b"".join(chunks) == blob[HEADER.size:]
    damaged = {
        "cut at a chunk boundary": head + b"".join(chunks[:3]),
        "cut inside a chunk": blob[:-5],
        "cut to the header": head,
        "reordered": head + chunks[1] + chunks[0] + chunks[2] + chunks[3],
        "chunk dropped": head + chunks[0] + chunks[2] + chunks[3],
        "chunk repeated": head + chunks[0] + chunks[0] + chunks[1] + chunks[2] + chunks[3],
    }
    for name, bad in damaged.items():
        with pytest.raises(AuthenticationFailed):
            _open(bad, KEY)
            pytest.fail(name)


def test_aes_reader_never_releases_an_unauthenticated_chunk():
    data = os.urandom(3 * CHUNK)
    blob = bytearray(_seal(data, KEY))
    blob[HEADER.size + CHUNK + TAG_BYTES + 5] ^= 0x80  # inside the second chunk
    reader = io.BufferedReader(AesReader(io.BytesIO(bytes(blob)), KEY), 256)
    got = b""
    with pytest.raises(AuthenticationFailed, match="chunk 1"):
        while True:
            piece = reader.read(100)
            if not piece:
                break
            got += piece
    assert got == data[:len(got)] and len(got) <= CHUNK


def test_aes_wrong_key_names_the_key_id_needed():
    blob = _seal(b"secret rows", KEY)
    other = os.urandom(32)
    with pytest.raises(AuthenticationFailed, match="needs key id %s" % aes_key_id(KEY)):
        _open(blob, other)


def test_aes_constant_memory_on_a_large_stream():
    """200 MiB through the writer and back through the reader: Python's peak stays a few chunks."""
    total = 200 << 20
    piece = os.urandom(1 << 20)
    tracemalloc.start()
    try:
        sink_digest = hashlib.sha256()
        sink_size = [0]

        def sink(data):
            sink_digest.update(data)
            sink_size[0] += len(data)

        writer = AesWriter(sink, KEY, 1 << 20)
        for _count in range(total // len(piece)):
            writer.write(piece)
        writer.close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sink_size[0] == HEADER.size + total + 200 * TAG_BYTES
    assert peak < 16 << 20, peak


def _age_pair():
    pyrage = pytest.importorskip("pyrage") if not os.environ.get("CI") else __import__("pyrage")
    identity = pyrage.x25519.Identity.generate()
    return identity, identity.to_public()


def test_age_streams_round_trip_tamper_and_wrong_identity():
    identity, recipient = _age_pair()
    data = os.urandom(300_000)
    out = io.BytesIO()
    writer = AgeWriter(out.write, [recipient])
    for start in range(0, len(data), 65_000):
        writer.write(data[start:start + 65_000])
    writer.close()
    blob = out.getvalue()
    assert blob.startswith(b"age-encryption.org/v1\n")
    key_id = age_key_id(str(recipient))
    assert io.BufferedReader(AgeReader(io.BytesIO(blob), [identity], "f", [key_id])).read() == data
    tampered = bytearray(blob)
    tampered[-100] ^= 0x01
    with pytest.raises(AuthenticationFailed, match=key_id):
        io.BufferedReader(AgeReader(io.BytesIO(bytes(tampered)), [identity], "f", [key_id])).read()
    other, _public = _age_pair()
    with pytest.raises(AuthenticationFailed, match="No matching keys"):
        io.BufferedReader(AgeReader(io.BytesIO(blob), [other], "f", [key_id])).read()


def test_age_constant_memory_on_a_large_stream():
    """pyrage's encrypt_io reads our pipe in 8 KiB pieces: 200 MiB pass with a small Python peak."""
    _identity, recipient = _age_pair()
    piece = os.urandom(1 << 20)
    size = [0]
    tracemalloc.start()
    try:
        writer = AgeWriter(lambda data: size.__setitem__(0, size[0] + len(data)), [recipient])
        for _count in range(200):
            writer.write(piece)
        writer.close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert size[0] > 200 << 20
    assert peak < 16 << 20, peak


# ----------------------------------------------------------------------------- keys and config

def _key_file(path: Path, key: bytes, mode: int = 0o600) -> Path:
    path.write_text("# test key\n%s\n" % key.hex())
    path.chmod(mode)
    return path


def _cfg(tmp_path, **env):
    base = {"BACKUP_DIR": str(tmp_path / "backups"), "BACKUP_ENCRYPTION": "true"}
    base.update(env)
    return load_config(env=base)


def test_key_file_readable_by_others_is_refused(tmp_path):
    path = _key_file(tmp_path / "loose.key", KEY, 0o644)
    with pytest.raises(ConfigError, match=r"has mode 0644: it must be private to its owner \(chmod 600"):
        load_keyring(_cfg(tmp_path, BACKUP_ENCRYPTION_KEY_FILE=str(path)))


def test_key_file_inside_the_backup_directory_is_refused(tmp_path):
    (tmp_path / "backups").mkdir()
    path = _key_file(tmp_path / "backups" / "backup.key", KEY)
    with pytest.raises(ConfigError, match="is inside the backup directory"):
        load_keyring(_cfg(tmp_path, BACKUP_ENCRYPTION_KEY_FILE=str(path)))


def test_bad_key_file_content_never_echoes_it(tmp_path):
    path = tmp_path / "bad.key"
    path.write_text("not-a-key-but-maybe-a-secret\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError) as caught:
        load_keyring(_cfg(tmp_path, BACKUP_ENCRYPTION_KEY_FILE=str(path)))
    assert "maybe-a-secret" not in str(caught.value) and "32-byte key" in str(caught.value)


def test_keyring_newest_key_writes_and_every_key_reads(tmp_path):
    ring_dir = tmp_path / "keyring"
    first = write_key_file(str(ring_dir), str(tmp_path / "backups"))
    second = write_key_file(str(ring_dir), str(tmp_path / "backups"))
    assert oct(os.stat(second["path"]).st_mode & 0o777) == "0o600"
    ring = load_keyring(_cfg(tmp_path, BACKUP_ENCRYPTION_KEYRING=str(ring_dir)))
    assert ring.write_aes_id == second["key_id"] and set(ring.aes_keys) == {first["key_id"], second["key_id"]}
    assert sealing_for(_cfg(tmp_path, BACKUP_ENCRYPTION_KEYRING=str(ring_dir))).key_id == second["key_id"]
    with pytest.raises(KeyMissing, match="needs aes-256-gcm key id 0123456789abcdef"):
        ring.aes_key("0123456789abcdef")


def test_systemd_credentials_directory(tmp_path, monkeypatch):
    creds = tmp_path / "creds"
    creds.mkdir()
    _key_file(creds / "backup.key", KEY, 0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    ring = load_keyring(_cfg(tmp_path))
    assert ring.write_aes_id == aes_key_id(KEY)
    ring = load_keyring(_cfg(tmp_path, BACKUP_ENCRYPTION_KEY_FILE="backup.key"))  # a credential name
    assert ring.aes_sources[aes_key_id(KEY)] == str(creds / "backup.key")


def test_encryption_without_a_key_is_one_clear_line(tmp_path):
    with pytest.raises(ConfigError, match="BACKUP_ENCRYPTION=true needs a key"):
        sealing_for(_cfg(tmp_path))
    with pytest.raises(ConfigError, match="encryption mode age needs recipients"):
        sealing_for(_cfg(tmp_path, BACKUP_ENCRYPTION_MODE="age"))


def test_config_names_bad_values(tmp_path):
    with pytest.raises(ConfigError, match="BACKUP_ENCRYPTION_MODE='rot13' is not valid: use aes-256-gcm or age"):
        _cfg(tmp_path, BACKUP_ENCRYPTION_MODE="rot13")
    with pytest.raises(ConfigError, match="'age1nope' is not a valid age X25519 recipient"):
        _cfg(tmp_path, BACKUP_ENCRYPTION_RECIPIENTS="age1nope")
    with pytest.raises(ConfigError, match="BACKUP_ENCRYPTION='perhaps' is not valid"):
        _cfg(tmp_path, BACKUP_ENCRYPTION="perhaps")


def test_config_json_object_and_recipient_files(tmp_path):
    _identity, recipient = _age_pair()
    rfile = tmp_path / "recipients.txt"
    rfile.write_text("# backup hosts\n%s\n" % recipient)
    config = tmp_path / "config.json"
    config.write_text('{"backup": {"encryption": {"mode": "age", "recipients": ["%s"]}}}' % rfile)
    cfg = load_config(env={}, config_file=str(config))
    assert cfg.encryption is True and cfg.encryption_mode == "age" and cfg.encryption_recipients == [str(recipient)]
    config.write_text('{"backup": {"encryption": {"cipher": "des"}}}')
    with pytest.raises(ConfigError, match="backup.encryption.cipher='des'.*unknown key"):
        load_config(env={}, config_file=str(config))
    config.write_text('{"backup": {"encryption": true, "types": {"schema": {"encryption": false}}}}')
    cfg = load_config(env={}, config_file=str(config))
    assert cfg.encryption_for("full") is True and cfg.encryption_for("schema") is False


# ----------------------------------------------------------------------------- the pipeline and the docs

def _binding_for(dest: str) -> Binding:
    return Binding("default", "full-app-20261126T020000Z", os.path.basename(dest))


def _pipeline(tmp_path, sealing, name="out.dump.gz.enc"):
    payload = "import sys,os; sys.stdout.buffer.write(b'PGDMP' + os.urandom(8) * 300000)"
    dest = str(tmp_path / name)
    result = stream_tool_to_file([sys.executable, "-c", payload], dict(os.environ), dest, "gzip", None,
                                 lambda head, tail, size: None, "tool", "dump", sealing=sealing,
                                 binding=_binding_for(dest))
    return dest, result


def test_pipeline_hashes_the_stored_encrypted_bytes(tmp_path):
    cfg = _cfg(tmp_path, BACKUP_ENCRYPTION_KEY_FILE=str(_key_file(tmp_path / "k.key", KEY)))
    sealing = sealing_for(cfg)
    dest, result = _pipeline(tmp_path, sealing)
    stored = Path(dest).read_bytes()
    assert result.sha256 == hashlib.sha256(stored).hexdigest() and result.size == len(stored)
    assert stored.startswith(b"SWPGAES\x02") and not os.path.exists(dest + ".partial")
    assert sealing.record()["format"] == "seawall-aes-256-gcm-chunked-v2"
    with open_decrypted(dest, sealing.record(), cfg, "f", binding=_binding_for(dest)) as plain:
        assert gzip.decompress(plain.read()).startswith(b"PGDMP")
    assert KEY.hex() not in repr(sealing.record())
    with pytest.raises(ValueError, match="read with its binding"):
        open_decrypted(dest, sealing.record(), cfg, "f")  # a bound record is never read without one


def test_pipeline_failure_leaves_no_file(tmp_path):
    cfg = _cfg(tmp_path, BACKUP_ENCRYPTION_KEY_FILE=str(_key_file(tmp_path / "k.key", KEY)))
    dest = str(tmp_path / "bad.dump.gz.enc")
    with pytest.raises(BackupError):
        stream_tool_to_file([sys.executable, "-c", "import sys; sys.stdout.write('x'); sys.exit(3)"], dict(os.environ),
                            dest, "gzip", None, lambda head, tail, size: None, "tool", "dump",
                            sealing=sealing_for(cfg), binding=_binding_for(dest))
    assert os.listdir(tmp_path) == ["k.key"]


def _doc_script(tmp_path) -> Path:
    text = (REPO / "docs" / "encryption.md").read_text()
    match = re.search(r"<!-- seawall-decrypt.py: begin -->\n```python\n(.*?)```\n<!-- seawall-decrypt.py: end -->",
                      text, re.S)
    assert match, "docs/encryption.md lost its decrypt script"
    script = tmp_path / "seawall-decrypt.py"
    script.write_text(match.group(1))
    return script


@pytest.mark.parametrize("version", [1, 2])
def test_documented_script_decrypts_and_refuses_tampering(tmp_path, version):
    key_path = _key_file(tmp_path / "k.key", KEY)
    sealing = sealing_for(_cfg(tmp_path, BACKUP_ENCRYPTION_KEY_FILE=str(key_path)))
    dest, _result = _pipeline(tmp_path, sealing)
    if version == 1:  # an old file: what the engine wrote before the binding
        plain = io.BufferedReader(AesReader(open(dest, "rb"), KEY, binding=_binding_for(dest))).read()
        Path(dest).write_bytes(_seal(plain, KEY, chunk=1 << 20, pieces=1 << 16))
    assert Path(dest).read_bytes()[7] == version
    script = _doc_script(tmp_path)
    out = subprocess.run([sys.executable, str(script), str(key_path), dest], capture_output=True, check=False)
    assert out.returncode == 0, out.stderr
    assert gzip.decompress(out.stdout).startswith(b"PGDMP") and out.stderr == b""
    if version == 2:  # the context is authenticated: another binding in the header fails
        blob = bytearray(Path(dest).read_bytes())
        blob[HEADER.size + 2 + len(b"seawall-pgbackup binding v1\0")] ^= 0x01
        moved = tmp_path / "moved.enc"
        moved.write_bytes(bytes(blob))
        out = subprocess.run([sys.executable, str(script), str(key_path), str(moved)], capture_output=True,
                             check=False)
        assert out.returncode == 1 and b"authentication failed at chunk 0" in out.stderr and out.stdout == b""
    blob = bytearray(Path(dest).read_bytes())
    blob[len(blob) // 2] ^= 0x04
    Path(dest).write_bytes(bytes(blob))
    out = subprocess.run([sys.executable, str(script), str(key_path), dest], capture_output=True, check=False)
    assert out.returncode == 1 and b"authentication failed" in out.stderr
    other = _key_file(tmp_path / "other.key", os.urandom(32))
    out = subprocess.run([sys.executable, str(script), str(other), dest], capture_output=True, check=False)
    assert out.returncode == 1 and ("needs key id %s" % aes_key_id(KEY)).encode() in out.stderr


def test_age_cli_decrypts_an_age_mode_file(tmp_path):
    age = shutil.which("age")
    if age is None:
        if os.environ.get("CI"):
            pytest.fail("the age command is missing (Debian package age, make system-deps)")
        pytest.skip("the age command is not installed")
    identity, recipient = _age_pair()
    ident_file = tmp_path / "identity.txt"
    ident_file.write_text("%s\n" % identity)
    ident_file.chmod(0o600)
    cfg = _cfg(tmp_path, BACKUP_ENCRYPTION_MODE="age", BACKUP_ENCRYPTION_RECIPIENTS=str(recipient))
    dest, _result = _pipeline(tmp_path, sealing_for(cfg), "out.dump.gz.age")
    out = subprocess.run([age, "-d", "-i", str(ident_file), dest], capture_output=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout[:AGE_PREFIX_BYTES] == age_prefix(_binding_for(dest))
    assert gzip.decompress(out.stdout[AGE_PREFIX_BYTES:]).startswith(b"PGDMP")
    # The documented command line, as written in docs/encryption.md: age -d ... | tail -c +41 | gunzip
    text = (REPO / "docs" / "encryption.md").read_text()
    assert "age -d -i /secure/age-identity.txt full-highseas_vtt-20261126T020000Z.dump.gz.age | tail -c +41 | gunzip" \
        in text
    shell = subprocess.run(["sh", "-c", 'age -d -i "$1" "$2" | tail -c +41 | gunzip', "sh", str(ident_file), dest],
                           capture_output=True, check=False)
    assert shell.returncode == 0 and shell.stdout.startswith(b"PGDMP"), shell.stderr
