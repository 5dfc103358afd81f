"""Issue #16, the attacks: whoever can write to a destination (or the backup directory) cannot plant, downgrade,
replay or read a backup, and a key rotation or a crashed rekey leaves nothing behind.

Every numbered case of the issue, against the S3 stand-in (SeaweedFS) and a local directory destination
(BACKUP_LOCAL_PATH), in both encryption modes: ``aes`` (a keyring made by ``keygen --keyring``; manifests carry
an HMAC under a key derived from the repository key) and ``age`` (recipients on the backup host, the identity
on the restore side, manifests signed with an Ed25519 key from ``keygen --signing`` whose public key the
restore side pins in BACKUP_ENCRYPTION_TRUSTED_SIGNERS).

1. plant / downgrade   test_planted_unencrypted_backup_is_never_restored, test_age_backup_signed_by_an_untrusted...,
                       test_unencrypted_backup_is_refused...
2. replay              test_replayed_data_object_is_refused, test_replayed_file_fails_authentication...
3. rotation            test_rekey_reaches_every_copy, test_sync_after_an_offline_rekey..., test_health_warns...
4. crashed rekey       test_rekey_recovers_from_a_kill
5. metadata in clear   test_destination_manifest_keeps_the_description_sealed
and the manifest's authentication itself: test_manifests_are_signed, test_forged_manifests_are_not_trusted,
test_unsigned_manifests_need_the_option_and_rekey_migrates_them.

PostgreSQL 15 only; one SeaweedFS for the module.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from tests.integration import cli
from tests.support import load_sample
from tests.support.compare import table_checksums
from tests.support.standins import SeaweedFS, StandinMissing, free_port

MODES = ("aes", "age")
SITES = ("s3", "dir")
STAMP = re.compile(r"(?P<stamp>[0-9]{8}T[0-9]{6}Z)(?P<suffix>-[1-9][0-9]*)?$")
REFUSAL_WORDS = ("signature", "signed", "repository", "unencrypted", "not encrypted", "key")


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", name="s3")
def _s3(tmp_path_factory) -> Iterator[SeaweedFS]:
    try:
        server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    except StandinMissing as exc:
        if os.environ.get("CI"):
            pytest.fail("SeaweedFS missing in CI: %s" % exc, pytrace=False)
        pytest.skip("SeaweedFS not installed: %s" % exc)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", name="source")
def _source(pg15) -> Iterator[str]:
    """The sample database, shared by the module (read only)."""
    name = "auth_src_%s" % uuid.uuid4().hex[:8]
    load_sample(pg15, name)
    try:
        yield name
    finally:
        pg15.drop_db(name)


@pytest.fixture(scope="module", name="attacker_db")
def _attacker_db(pg15) -> Iterator[str]:
    """The attacker's own database: what a planted backup would put into the target."""
    name = "auth_evil_%s" % uuid.uuid4().hex[:8]
    pg15.create_db(name)
    pg15.psql("CREATE TABLE planted (secret text); INSERT INTO planted VALUES ('the attacker''s data');", db=name)
    try:
        yield name
    finally:
        pg15.drop_db(name)


@pytest.fixture(name="ledger")
def _ledger(pg15) -> Iterator[str]:
    """A small database of this test alone (it changes between backups), and whatever was restored from it."""
    name = "auth_led_%s" % uuid.uuid4().hex[:8]
    pg15.create_db(name)
    pg15.psql("CREATE TABLE ledger (version int NOT NULL); INSERT INTO ledger VALUES (1);", db=name)
    try:
        yield name
    finally:
        for db in pg15.databases():
            if db.startswith(name):
                pg15.drop_db(db)


@pytest.fixture(name="targets")
def _targets(pg15) -> Iterator[List[str]]:
    """Names of restore targets to drop after the test."""
    names: List[str] = []
    yield names
    for name in names:
        pg15.drop_db(name)


# ----------------------------------------------------------------------------------------------- helpers
class Keys:
    """The keys of one encryption mode, and the environment of a host holding them all (backup and restore)."""

    def __init__(self, mode: str, root: Path) -> None:
        self.mode = mode
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.keygen_env = cli.cli_env(None, str(root / "keygen-backups"))
        self.old_paths: List[str] = []
        if mode == "aes":
            self.keyring = root / "ring"
            made = self._keygen(["--keyring", str(self.keyring)])
            self.key_id, self.key_path = made["key_id"], made["path"]
        else:
            self.generation = 0
            self.identities: List[Path] = []
            self._new_age_identity()
            signer = self._keygen(["--signing", "--output", str(root / "signing.key")])
            assert signer["public_key"].startswith("ed25519:"), signer
            self.signing_key, self.public_key = root / "signing.key", signer["public_key"]
            assert oct(os.stat(self.signing_key).st_mode & 0o777) == "0o600"

    def _keygen(self, args: List[str]) -> Dict[str, str]:
        return json.loads(cli.run(["keygen"] + args + ["--json"], self.keygen_env).stdout)

    def _new_age_identity(self) -> None:
        self.generation += 1
        path = self.root / ("age-%d.txt" % self.generation)
        made = self._keygen(["--age", str(path)])
        self.identities.append(path)
        self.key_id, self.recipient = made["key_id"], made["recipient"]
        self._write_identity_file(self.identities)

    def _write_identity_file(self, paths: List[Path]) -> None:
        both = self.root / "identities.txt"
        both.write_text("".join(p.read_text() for p in paths))
        both.chmod(0o600)

    def env(self) -> Dict[str, str]:
        if self.mode == "aes":
            return {"BACKUP_ENCRYPTION": "true", "BACKUP_ENCRYPTION_KEYRING": str(self.keyring)}
        return {"BACKUP_ENCRYPTION": "true", "BACKUP_ENCRYPTION_MODE": "age",
                "BACKUP_ENCRYPTION_RECIPIENTS": self.recipient,
                "BACKUP_ENCRYPTION_SIGNING_KEY_FILE": str(self.signing_key),
                "BACKUP_ENCRYPTION_TRUSTED_SIGNERS": self.public_key,
                "BACKUP_ENCRYPTION_IDENTITY_FILE": str(self.root / "identities.txt")}

    def rotate(self) -> str:
        """A new key that new backups and ``rekey`` use; returns the old key id (still readable)."""
        old = self.key_id
        if self.mode == "aes":
            self.old_paths.append(self.key_path)
            made = self._keygen(["--keyring", str(self.keyring)])
            self.key_id, self.key_path = made["key_id"], made["path"]
        else:
            self._new_age_identity()
        assert self.key_id != old
        return old

    def drop_old(self) -> None:
        """The old keys are gone: only the newest one reads."""
        if self.mode == "aes":
            for path in self.old_paths:
                os.unlink(path)
        else:
            self._write_identity_file(self.identities[-1:])


class Site:
    """A destination as the attacker (or the test) sees it: raw objects under a prefix, read and written directly."""

    def __init__(self, kind: str, s3: Optional[SeaweedFS], tmp_path: Path, monkeypatch) -> None:
        self.kind = kind
        self.prefix = "pg-%s" % uuid.uuid4().hex[:8]
        if kind == "dir":
            self.name = "local"
            self.root = tmp_path / "second-disk" / self.prefix
            self.env = {"BACKUP_LOCAL_PATH": str(self.root)}
            self.store = None
            return
        from seawall_pgbackup.config.destinations import parse_one
        from seawall_pgbackup.store import open_destination

        self.name = "s3"
        self.env = dict(s3.env(), BACKUP_S3_ENDPOINT=s3.endpoint, BACKUP_S3_PREFIX=self.prefix,
                        BACKUP_S3_BUCKET="backups", BACKUP_UPLOAD_PART_SIZE_MB="5")
        for key, value in s3.env().items():
            monkeypatch.setenv(key, value)
        self.store = open_destination(parse_one("s3", {"bucket": "backups", "endpoint": s3.endpoint,
                                                       "prefix": self.prefix}))
        self.scratch = tmp_path / "site-scratch"
        self.scratch.mkdir(exist_ok=True)

    def read(self, key: str) -> bytes:
        if self.store is None:
            return (self.root / key).read_bytes()
        return self.store.read_bytes(key)

    def write(self, key: str, data: bytes) -> None:
        if self.store is None:
            path = self.root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return
        staged = self.scratch / uuid.uuid4().hex
        staged.write_bytes(data)
        self.store.put_file(key, str(staged), len(data), hashlib.sha256(data).hexdigest())
        staged.unlink()

    def keys(self, folder: str) -> List[str]:
        """The object names in ``folder`` (e.g. "full")."""
        if self.store is None:
            path = self.root / folder
            return sorted(os.listdir(path)) if path.is_dir() else []
        return sorted(info.key.rsplit("/", 1)[-1] for info in self.store.list(folder + "/"))

    def manifest(self, backup: Dict) -> Dict:
        return json.loads(self.read("%s/%s.json" % (backup["type"], backup["id"])))

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


@pytest.fixture(name="site_factory")
def _site_factory(tmp_path, monkeypatch, request):
    made: List[Site] = []

    def make(kind: str) -> Site:
        s3 = request.getfixturevalue("s3") if kind == "s3" else None
        site = Site(kind, s3, tmp_path, monkeypatch)
        made.append(site)
        return site

    yield make
    for site in made:
        site.close()


def _env(pg15, database: str, backup_dir: Path, keys: Optional[Keys], site: Optional[Site] = None,
         **extra: str) -> Dict[str, str]:
    # Retention keeps every backup of these tests (by default a second full of the day replaces the first).
    config = backup_dir.parent / "keep-all.json"
    if not config.exists():
        config.write_text(json.dumps({"backup": {"types": {"full": {"retention": {"keep_last": 20}}}}}))
    settings = dict(keys.env() if keys else {}, BACKUP_CONFIG=str(config))
    settings.update(site.env if site else {})
    settings.update(extra)
    return cli.cli_env(pg15.url(database), str(backup_dir), PGPASSFILE=str(pg15.passfile), **settings)


def _manifest_path(backup_dir: Path, backup: Dict) -> Path:
    return backup_dir / backup["type"] / (backup["id"] + ".json")


def _read_manifest(backup_dir: Path, backup: Dict) -> Dict:
    return json.loads(_manifest_path(backup_dir, backup).read_text(encoding="utf-8"))


def _write_manifest(backup_dir: Path, backup: Dict, document: Dict) -> None:
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    _manifest_path(backup_dir, backup).write_text(text, encoding="utf-8")


def _ids(env: Dict[str, str], *args: str) -> List[str]:
    return [row["id"] for row in json.loads(cli.run(["list", "--json"] + list(args), env).stdout)]


def _refusal(env: Dict[str, str], manifest_name: str, *args: str) -> str:
    """The reason ``list --all`` gives for the manifest ``manifest_name`` it does not trust."""
    rows = json.loads(cli.run(["list", "--all", "--json"] + list(args), env).stdout)
    named = [r for r in rows if r.get("id") is None and str(r.get("manifest", "")).endswith(manifest_name)]
    assert len(named) == 1, "list --all does not name %s as not trusted: %s" % (manifest_name, rows)
    reason = named[0].get("reason") or ""
    assert any(word in reason.lower() for word in REFUSAL_WORDS), reason
    return reason


def _refused(proc: subprocess.CompletedProcess, backup_id: str, codes=(7, 8)) -> str:
    """A one-line refusal naming the backup, with the not-found or backup-bad exit code (or, where ``codes``
    allows it, 12: signed under a key or by a signer this host does not have, like a missing decryption key)."""
    line = cli.error_line(proc)
    assert proc.returncode in codes, (proc.returncode, line)
    assert backup_id in line, line
    return line


def _health(env: Dict[str, str]) -> Dict:
    proc = cli.run(["health", "--json"], env, check=False)
    return json.loads(proc.stdout)


def _later_id(backup_id: str, seconds: int = 1) -> str:
    match = STAMP.search(backup_id)
    moment = datetime.strptime(match.group("stamp"), "%Y%m%dT%H%M%SZ") + timedelta(seconds=seconds)
    return backup_id[:match.start()] + moment.strftime("%Y%m%dT%H%M%SZ")


def _shift(text: str, seconds: int = 1) -> str:
    moment = _parse(text) + timedelta(seconds=seconds)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _restore(pg15, env: Dict[str, str], targets: List[str], selector: str, *args: str,
             check: bool = True) -> subprocess.CompletedProcess:
    target = "auth_tgt_%s" % uuid.uuid4().hex[:8]
    targets.append(target)
    proc = cli.run(["restore", selector, "--target-url", pg15.url(target, with_password=False), "--json"]
                   + list(args), env, check=check)
    proc.target = target  # type: ignore[attr-defined]
    return proc


def _flip_last(text: str) -> str:
    """``text`` with its last character changed (a signature that no longer matches)."""
    return text[:-1] + ("A" if text[-1:] != "A" else "B")


def _database_file(manifest: Dict) -> Dict:
    """The entry of the database dump (the first file of a full backup)."""
    entries = [f for f in manifest["files"] if f.get("role") == "database"] or manifest["files"][:1]
    return entries[0]


# ----------------------------------------------------------------------------- the manifest's authentication
@pytest.mark.parametrize("mode", MODES)
def test_manifests_are_signed(mode, pg15, ledger, tmp_path):
    backup_dir = tmp_path / "backups"
    keys = Keys(mode, tmp_path / "keys")
    env = _env(pg15, ledger, backup_dir, keys)
    backup = cli.create(env, "full")
    manifest = _read_manifest(backup_dir, backup)
    assert manifest["repository"] == "default"
    auth = manifest["auth"]
    assert auth["algorithm"] == ("hmac-sha256" if mode == "aes" else "ed25519") and auth["value"] and auth["key_id"]
    assert _ids(env) == [backup["id"]]
    if mode == "age":
        # A restore-only host holds the identity and the pinned public key, no signing key: it trusts the backup ...
        restore_only = {k: v for k, v in env.items() if k != "BACKUP_ENCRYPTION_SIGNING_KEY_FILE"}
        assert _ids(restore_only) == [backup["id"]]
        # ... but not with another pinned key (the attacker's, say): nothing it signed is trusted.
        other = json.loads(cli.run(["keygen", "--signing", "--output", str(tmp_path / "other.key"), "--json"],
                                   keys.keygen_env).stdout)
        pinned_other = dict(restore_only, BACKUP_ENCRYPTION_TRUSTED_SIGNERS=other["public_key"])
        assert _ids(pinned_other) == []
        _refusal(pinned_other, backup["id"] + ".json")


@pytest.mark.parametrize("mode", MODES)
def test_forged_manifests_are_not_trusted(mode, pg15, ledger, tmp_path, targets):
    """A manifest whose signature fails, names an unknown key or another repository is not acted on, and said so."""
    backup_dir = tmp_path / "backups"
    keys = Keys(mode, tmp_path / "keys")
    env = _env(pg15, ledger, backup_dir, keys)
    first = cli.create(env, "full")
    pg15.psql("UPDATE ledger SET version = 2", db=ledger)
    second = cli.create(env, "full")
    genuine = _read_manifest(backup_dir, second)
    forgeries = {
        "value": lambda d: d["auth"].update(value=_flip_last(d["auth"]["value"])),
        "unknown key": lambda d: d["auth"].update(key_id="0" * 16),
        "edited field": lambda d: d.update(database_size=(d.get("database_size") or 0) + 1),
        "edited file": lambda d: _database_file(d).update(sha256="0" * 64),
        "another repository": lambda d: d.update(repository="elsewhere"),
    }
    for what, forge in forgeries.items():
        document = json.loads(json.dumps(genuine))
        forge(document)
        _write_manifest(backup_dir, second, document)
        assert _ids(env) == [first["id"]], what
        _refusal(env, second["id"] + ".json")
        codes = (7, 8, 12) if what == "unknown key" else (7, 8)
        _refused(cli.run(["restore", second["id"], "--target-url", pg15.url(ledger + "_never", with_password=False)],
                         env, check=False), second["id"], codes)
        _refused(cli.run(["verify", second["id"], "--level", "checksum"], env, check=False), second["id"], codes)
    assert ledger + "_never" not in pg15.databases()
    # With the last forgery in place: health names it, latest is the genuine older backup, retention ignores it.
    health = _health(env)
    assert any(second["id"] in json.dumps(c) for c in health["checks"] if c["status"] != "ok"), health
    plan = json.loads(cli.run(["cleanup", "--dry-run", "--json"], env).stdout)
    assert second["id"] not in plan["kept"] + plan["to_delete"], plan
    verified = json.loads(cli.run(["verify", "latest", "--level", "checksum", "--json"], env).stdout)
    assert [v["id"] for v in verified] == [first["id"]], verified
    restored = _restore(pg15, env, targets, "latest")
    assert json.loads(restored.stdout)["backup_id"] == first["id"]
    assert pg15.scalar("SELECT version FROM ledger", db=restored.target) == "1"
    # The genuine manifest back: trusted again. Under another repository id nothing of this one is.
    _write_manifest(backup_dir, second, genuine)
    assert _ids(env) == [first["id"], second["id"]]
    foreign = dict(env, BACKUP_REPOSITORY_ID="elsewhere")
    assert _ids(foreign) == []
    _refusal(foreign, second["id"] + ".json")


@pytest.mark.parametrize("mode", MODES)
def test_unsigned_manifests_need_the_option_and_rekey_migrates_them(mode, pg15, ledger, tmp_path):
    """A manifest from before #16 (no "auth"): refused, unless --accept-unsigned; ``rekey`` signs it once."""
    backup_dir = tmp_path / "backups"
    keys = Keys(mode, tmp_path / "keys")
    env = _env(pg15, ledger, backup_dir, keys)
    old = cli.create(env, "full")
    document = _read_manifest(backup_dir, old)
    del document["auth"]
    _write_manifest(backup_dir, old, document)

    assert _ids(env) == []
    _refusal(env, old["id"] + ".json")
    _refused(cli.run(["restore", old["id"], "--target-url", pg15.url(ledger + "_never", with_password=False)],
                     env, check=False), old["id"])
    _refused(cli.run(["verify", old["id"]], env, check=False), old["id"])
    health = _health(env)
    assert any(old["id"] in json.dumps(c) for c in health["checks"] if c["status"] != "ok"), health
    assert ledger + "_never" not in pg15.databases()

    assert _ids(env, "--accept-unsigned") == [old["id"]]
    cli.run(["verify", old["id"], "--level", "archive", "--accept-unsigned"], env)
    cli.run(["rekey", "--all", "--accept-unsigned"], env)
    migrated = _read_manifest(backup_dir, old)
    assert migrated["auth"]["value"] and migrated["repository"] == "default"
    assert _ids(env) == [old["id"]]
    cli.run(["verify", old["id"], "--level", "archive"], env)
    assert not any(old["id"] in json.dumps(c) for c in _health(env)["checks"] if c["check"] == "catalog"
                   and c["status"] != "ok")


# ---------------------------------------------------------------------------------- 1. plant and downgrade
@pytest.mark.parametrize("kind", SITES)
@pytest.mark.parametrize("mode", MODES)
def test_planted_unencrypted_backup_is_never_restored(mode, kind, pg15, source, attacker_db, tmp_path, targets,
                                                      site_factory):
    site = site_factory(kind)
    backup_dir = tmp_path / "backups"
    keys = Keys(mode, tmp_path / "keys")
    env = _env(pg15, source, backup_dir, keys, site)
    genuine = cli.create(env, "full")
    assert _ids(env, "--destination", site.name) == [genuine["id"]]

    # The attacker: their own database, no encryption, their own backup directory, renamed as a newer backup.
    evil_dir = tmp_path / "attacker"
    evil = cli.create(cli.cli_env(pg15.url(attacker_db), str(evil_dir), PGPASSFILE=str(pg15.passfile)), "full")
    assert evil["encryption"] is None
    # Newer than the genuine backup, yet not ahead of the clock (a backup from the future is not trusted anyway).
    planted_id = _later_id(genuine["id"])
    document = _read_manifest(evil_dir, evil)
    document.update(id=planted_id, database=genuine["database"], created_at=_shift(genuine["created_at"]),
                    finished_at=_shift(genuine["created_at"], 2), copies=[])
    while datetime.now(timezone.utc) < _parse(genuine["created_at"]) + timedelta(seconds=3):
        time.sleep(0.2)
    document["repository"] = "default"
    for entry in document["files"]:
        data = (evil_dir / "full" / entry["name"]).read_bytes()
        entry["name"] = entry["name"].replace(evil["id"], planted_id)
        site.write("full/" + entry["name"], data)
    site.write("full/%s.json" % planted_id, json.dumps(document, indent=2, sort_keys=True).encode() + b"\n")

    assert _ids(env, "--destination", site.name) == [genuine["id"]]
    _refusal(env, planted_id + ".json", "--destination", site.name)
    plan = json.loads(cli.run(["cleanup", "--destination", site.name, "--dry-run", "--json"], env).stdout)
    assert planted_id not in plan["kept"] + plan["to_delete"], plan
    _refused(cli.run(["verify", planted_id, "--destination", site.name, "--level", "checksum"], env, check=False),
             planted_id)
    restored = _restore(pg15, env, targets, "latest", "--destination", site.name)
    assert json.loads(restored.stdout)["backup_id"] == genuine["id"]
    assert table_checksums(pg15, restored.target) == table_checksums(pg15, source)


def test_age_backup_signed_by_an_untrusted_key_is_never_restored(pg15, source, attacker_db, tmp_path, targets,
                                                                 site_factory):
    """In age mode the recipient is public: an attacker can encrypt to it and sign with a key of their own."""
    from seawall_pgbackup.codec.authn import Trust, render_manifest
    from seawall_pgbackup.config.settings import load_config

    site = site_factory("s3")
    backup_dir = tmp_path / "backups"
    keys = Keys("age", tmp_path / "keys")
    env = _env(pg15, source, backup_dir, keys, site)
    genuine = cli.create(env, "full")

    evil_keys = Keys("age", tmp_path / "attacker-keys")
    evil_keys.recipient = keys.recipient  # encrypts to the victim's recipient, signs with the attacker's key
    evil_dir = tmp_path / "attacker"
    evil_env = _env(pg15, attacker_db, evil_dir, evil_keys)
    evil = cli.create(evil_env, "full")
    assert evil["encryption"]["key_id"] == keys.key_id
    planted_id = _later_id(genuine["id"])
    document = _read_manifest(evil_dir, evil)
    document.pop("auth", None)
    document.update(id=planted_id, database=genuine["database"], created_at=_shift(genuine["created_at"]),
                    finished_at=_shift(genuine["created_at"], 2), copies=[])
    for entry in document["files"]:
        data = (evil_dir / "full" / entry["name"]).read_bytes()
        entry["name"] = entry["name"].replace(evil["id"], planted_id)
        site.write("full/" + entry["name"], data)
    signed = Trust.from_config(load_config(env=evil_env)).sign_document(document)  # a valid signature, wrong key
    site.write("full/%s.json" % planted_id, render_manifest(signed))
    while datetime.now(timezone.utc) < _parse(genuine["created_at"]) + timedelta(seconds=3):
        time.sleep(0.2)

    assert _ids(env, "--destination", site.name) == [genuine["id"]]
    _refusal(env, planted_id + ".json", "--destination", site.name)
    _refused(cli.run(["verify", planted_id, "--destination", site.name, "--level", "checksum"], env, check=False),
             planted_id, (7, 8, 12))
    restored = _restore(pg15, env, targets, "latest", "--destination", site.name)
    assert json.loads(restored.stdout)["backup_id"] == genuine["id"]
    assert table_checksums(pg15, restored.target) == table_checksums(pg15, source)


@pytest.mark.parametrize("mode", MODES)
def test_unencrypted_backup_is_refused_when_encryption_is_configured(mode, pg15, ledger, tmp_path, targets):
    """The same host with encryption switched off for one run: that backup is not trusted unless asked for."""
    backup_dir = tmp_path / "backups"
    keys = Keys(mode, tmp_path / "keys")
    env = _env(pg15, ledger, backup_dir, keys)
    sealed = cli.create(env, "full")
    pg15.psql("UPDATE ledger SET version = 2", db=ledger)
    plain = cli.create(dict(env, BACKUP_ENCRYPTION="false"), "full")
    assert plain["encryption"] is None

    assert _ids(env) == [sealed["id"]]
    _refused(cli.run(["verify", plain["id"], "--level", "checksum"], env, check=False), plain["id"])
    _refused(cli.run(["restore", plain["id"], "--target-url", pg15.url(ledger + "_never", with_password=False)],
                     env, check=False), plain["id"])
    assert ledger + "_never" not in pg15.databases()
    restored = _restore(pg15, env, targets, "latest")
    assert json.loads(restored.stdout)["backup_id"] == sealed["id"]
    assert pg15.scalar("SELECT version FROM ledger", db=restored.target) == "1"

    # Asked for explicitly, it is used (signed by this host; an unsigned one also needs --accept-unsigned).
    allow = ["--accept-unencrypted"] + ([] if _read_manifest(backup_dir, plain).get("auth") else ["--accept-unsigned"])
    assert _ids(env, *allow) == [sealed["id"], plain["id"]]
    restored = _restore(pg15, env, targets, "latest", *allow)
    assert json.loads(restored.stdout)["backup_id"] == plain["id"]
    assert pg15.scalar("SELECT version FROM ledger", db=restored.target) == "2"


# --------------------------------------------------------------------------------------------- 2. replay
@pytest.mark.parametrize("kind", SITES)
@pytest.mark.parametrize("mode", MODES)
def test_replayed_data_object_is_refused(mode, kind, pg15, ledger, tmp_path, targets, site_factory):
    """An older backup's encrypted data object over a newer one's at the destination."""
    site = site_factory(kind)
    backup_dir = tmp_path / "backups"
    keys = Keys(mode, tmp_path / "keys")
    env = _env(pg15, ledger, backup_dir, keys, site)
    older = cli.create(env, "full")
    pg15.psql("UPDATE ledger SET version = 2", db=ledger)
    newer = cli.create(env, "full")
    manifest_key = "full/%s.json" % newer["id"]
    genuine = site.read(manifest_key)
    old_entry, new_entry = _database_file(site.manifest(older)), _database_file(json.loads(genuine))
    replayed = site.read("full/" + old_entry["name"])
    site.write("full/" + new_entry["name"], replayed)

    # The manifest unchanged: the checksum tells.
    proc = cli.run(["verify", newer["id"], "--destination", site.name, "--level", "checksum"], env, check=False)
    assert proc.returncode == 8, proc.stdout + proc.stderr

    # The manifest edited to match (sha256 and size, every other field kept): the signature tells.
    document = json.loads(genuine)
    _database_file(document).update(sha256=hashlib.sha256(replayed).hexdigest(), size=len(replayed))
    site.write(manifest_key, json.dumps(document, indent=2, sort_keys=True).encode() + b"\n")
    assert _ids(env, "--destination", site.name) == [older["id"]]
    _refusal(env, newer["id"] + ".json", "--destination", site.name)
    _refused(cli.run(["verify", newer["id"], "--destination", site.name, "--level", "restore"], env, check=False),
             newer["id"])
    restored = _restore(pg15, env, targets, "latest", "--destination", site.name, check=False)
    if restored.returncode == 0:  # the older genuine backup, or nothing: never the replayed bytes as the newer one
        assert json.loads(restored.stdout)["backup_id"] == older["id"]
        assert pg15.scalar("SELECT version FROM ledger", db=restored.target) == "1"
    else:
        cli.error_line(restored)


@pytest.mark.parametrize("mode", MODES)
def test_replayed_file_fails_authentication_even_when_its_manifest_is_accepted(mode, pg15, ledger, tmp_path, targets):
    """The data is bound to its backup: with the signature out of the way (an unsigned manifest, accepted on
    purpose), a file moved from another backup still fails to decrypt as this one's."""
    backup_dir = tmp_path / "backups"
    keys = Keys(mode, tmp_path / "keys")
    env = _env(pg15, ledger, backup_dir, keys)
    older = cli.create(env, "full")
    pg15.psql("UPDATE ledger SET version = 2", db=ledger)
    newer = cli.create(env, "full")
    old_entry = _database_file(_read_manifest(backup_dir, older))
    document = _read_manifest(backup_dir, newer)
    new_entry = _database_file(document)
    replayed = (backup_dir / "full" / old_entry["name"]).read_bytes()
    (backup_dir / "full" / new_entry["name"]).write_bytes(replayed)
    new_entry.update(sha256=hashlib.sha256(replayed).hexdigest(), size=len(replayed))
    document.pop("auth", None)
    _write_manifest(backup_dir, newer, document)

    accept = ["--accept-unsigned"]
    cli.run(["verify", newer["id"], "--level", "checksum"] + accept, env)  # the checksums match now
    line = cli.error_line(cli.run(["verify", newer["id"], "--level", "archive"] + accept, env, check=False))
    assert any(word in line.lower() for word in ("authentication", "belongs to", "bound", "binding")), line
    proc = _restore(pg15, env, targets, newer["id"], *accept, check=False)
    line = cli.error_line(proc)
    assert newer["id"] in line
    assert proc.target not in pg15.databases()


# ------------------------------------------------------------------------------------------- 3. rotation
@pytest.mark.parametrize("kind", SITES)
@pytest.mark.parametrize("mode", MODES)
def test_rekey_reaches_every_copy(mode, kind, pg15, ledger, tmp_path, targets, site_factory):
    site = site_factory(kind)
    backup_dir = tmp_path / "backups"
    keys = Keys(mode, tmp_path / "keys")
    env = _env(pg15, ledger, backup_dir, keys, site)
    backup = cli.create(env, "full")
    old_key = keys.rotate()
    env = _env(pg15, ledger, backup_dir, keys, site)

    cli.run(["rekey", "--all"], env)
    raw = site.read("full/%s.json" % backup["id"]).decode()
    assert keys.key_id in raw and old_key not in json.dumps(json.loads(raw).get("encryption")), raw
    local = _read_manifest(backup_dir, backup)
    current = [(c["destination"], c.get("key_id")) for c in local["copies"] if not c.get("removed_at")]
    assert current == [(site.name, keys.key_id)], local
    # Every object at the destination is named by the manifest there: the old copies are gone.
    named = {backup["id"] + ".json"} | {f["name"] for f in json.loads(raw)["files"]}
    assert set(site.keys("full")) == named
    synced = json.loads(cli.run(["sync", "--json"], env).stdout)
    assert synced["copied"] == [] and synced["failed"] == []

    keys.drop_old()  # the old key retired for good: the destination alone still restores
    env = _env(pg15, ledger, backup_dir, keys, site)
    cli.run(["verify", "--destination", site.name, "--level", "archive"], env)
    restored = _restore(pg15, env, targets, "latest", "--destination", site.name)
    assert json.loads(restored.stdout)["backup_id"] == backup["id"]
    assert table_checksums(pg15, restored.target) == table_checksums(pg15, ledger)


@pytest.mark.parametrize("mode", MODES)
def test_sync_after_an_offline_rekey_reuploads_the_copies(mode, pg15, ledger, tmp_path, targets, site_factory):
    """The rekey ran while the destination was unreachable: the next sync sees the key mismatch and fixes it."""
    site = site_factory("s3")
    backup_dir = tmp_path / "backups"
    keys = Keys(mode, tmp_path / "keys")
    env = _env(pg15, ledger, backup_dir, keys, site)
    backup = cli.create(env, "full")
    old_key = keys.rotate()
    env = _env(pg15, ledger, backup_dir, keys, site)
    offline = dict(env, BACKUP_S3_ENDPOINT="http://127.0.0.1:%d" % free_port())
    cli.run(["rekey", "--all"], offline, check=False)  # the local copy is rekeyed; the destination's is not
    assert _read_manifest(backup_dir, backup)["encryption"]["key_id"] == keys.key_id
    assert old_key in site.read("full/%s.json" % backup["id"]).decode()

    synced = json.loads(cli.run(["sync", "--json"], env).stdout)
    assert [c["id"] for c in synced["copied"]] == [backup["id"]], synced
    raw = site.read("full/%s.json" % backup["id"]).decode()
    assert keys.key_id in raw and old_key not in json.dumps(json.loads(raw).get("encryption")), raw
    keys.drop_old()
    env = _env(pg15, ledger, backup_dir, keys, site)
    restored = _restore(pg15, env, targets, "latest", "--destination", site.name)
    assert json.loads(restored.stdout)["backup_id"] == backup["id"]


@pytest.mark.parametrize("mode", MODES)
def test_health_warns_while_a_copy_depends_on_a_retired_key(mode, pg15, ledger, tmp_path, site_factory):
    site = site_factory("s3")
    backup_dir = tmp_path / "backups"
    keys = Keys(mode, tmp_path / "keys")
    env = _env(pg15, ledger, backup_dir, keys, site)
    backup = cli.create(env, "full")
    old_key = keys.rotate()
    env = _env(pg15, ledger, backup_dir, keys, site, BACKUP_ENCRYPTION_RETIRED_KEYS=old_key)

    report = _health(env)  # (other checks are not ok here: no schema backup, for one)
    assert report["status"] != "ok", report
    assert any(old_key in json.dumps(c) for c in report["checks"] if c["status"] in ("warning", "warn")), report
    cli.run(["rekey", "--all"], env)
    report = _health(env)
    assert not any(old_key in json.dumps(c) for c in report["checks"] if c["status"] != "ok"), report
    assert site.manifest(backup)["id"] == backup["id"]


# -------------------------------------------------------------------------------------- 4. crashed rekey
PARTIAL_HOOK = """
import os, sys, time
_real = {"replace": os.replace, "rename": os.rename}
def _hooked(name):
    def move(src, dst, *args, **kwargs):
        path = os.fspath(src)
        if path.endswith(".partial") and not path.endswith(".json.partial"):
            with open(os.environ["SEAWALL_TEST_PAUSE_FILE"], "a") as handle:
                handle.write("partial-written\\n")
            time.sleep(120)
        return _real[name](src, dst, *args, **kwargs)
    return move
os.replace, os.rename = _hooked("replace"), _hooked("rename")
from seawall_pgbackup.cli.main import main
sys.exit(main(sys.argv[1:]))
"""
# "partial-written" needs no pause point (a hook on the rename); the named ones are ops/rekey.py's pause() calls.
REKEY_KILLS = ["partial-written", "rekey-copied", "rekey-saved", "rekey-removed", "rekey-uploaded"]


def _kill_at(args: List[str], env: Dict[str, str], step: str, work: Path) -> None:
    """Run the command, SIGKILL it at ``step``: a named pause point, or "partial-written" (a re-encrypted
    ``.partial`` file complete on disk, not yet renamed)."""
    marker = work / ("paused-%s-%s" % (step, uuid.uuid4().hex[:6]))
    env = dict(env, SEAWALL_TEST_PAUSE_FILE=str(marker))
    if step == "partial-written":
        command = [sys.executable, "-c", PARTIAL_HOOK]
    else:
        command = list(cli.COMMAND)
        env.update(SEAWALL_TEST_PAUSE=step, SEAWALL_TEST_PAUSE_SECONDS="120")
    proc = subprocess.Popen(command + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    reached = marker.exists()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    out, err = proc.communicate()
    assert reached, "%s not reached by %s (exit %s): %s%s" % (step, args, proc.returncode, out.decode(), err.decode())


@pytest.mark.parametrize("step", REKEY_KILLS)
@pytest.mark.parametrize("mode", MODES)
def test_rekey_recovers_from_a_kill(mode, step, pg15, ledger, tmp_path, site_factory):
    site = site_factory("dir")
    backup_dir = tmp_path / "backups"
    work = tmp_path / "work"
    work.mkdir()
    keys = Keys(mode, tmp_path / "keys")
    env = _env(pg15, ledger, backup_dir, keys, site)
    backup = cli.create(env, "full")
    keys.rotate()
    env = _env(pg15, ledger, backup_dir, keys, site)

    _kill_at(["rekey", "--all"], env, step, work)
    assert _ids(env) == [backup["id"]]
    cli.run(["verify", backup["id"], "--level", "restore"], env)  # whatever the kill left, the backup reads

    proc = cli.run(["rekey", "--all"], env, check=False)
    assert proc.returncode == 0 and "File exists" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    manifest = _read_manifest(backup_dir, backup)
    assert manifest["encryption"]["key_id"] == keys.key_id
    # No file in the folder that no manifest names: no .partial, no stale copy (without a cleanup run).
    assert set(os.listdir(backup_dir / "full")) == {backup["id"] + ".json"} | {f["name"] for f in manifest["files"]}
    raw = site.read("full/%s.json" % backup["id"]).decode()
    assert keys.key_id in raw, raw  # the destination's copy was rekeyed too
    assert set(site.keys("full")) == {backup["id"] + ".json"} | {f["name"] for f in json.loads(raw)["files"]}
    cli.run(["verify", backup["id"], "--level", "archive"], env)
    cli.run(["verify", "--destination", site.name, "--level", "archive"], env)


# ------------------------------------------------------------------------------------ 5. metadata in clear
@pytest.mark.parametrize("kind", SITES)
@pytest.mark.parametrize("mode", MODES)
def test_destination_manifest_keeps_the_description_sealed(mode, kind, pg15, source, tmp_path, site_factory):
    site = site_factory(kind)
    backup_dir = tmp_path / "backups"
    keys = Keys(mode, tmp_path / "keys")
    env = _env(pg15, source, backup_dir, keys, site)
    backup = cli.create(env, "full")
    local = _read_manifest(backup_dir, backup)
    # What must not leave the host in clear (the local manifest has it: this test can fail).
    secrets = list(local["table_rows"]) + list(local.get("database_sql") or [])
    assert len(local["table_rows"]) >= 3, local["table_rows"]
    names = [local["source"]["user"], local["host"]]
    raw = site.read("full/%s.json" % backup["id"]).decode()
    remote = json.loads(raw)
    assert remote.get("sealed"), "the destination's manifest has no sealed part"
    for field in ("table_rows", "database_sql"):
        assert field not in raw, field
    for text in secrets:
        assert text not in raw, text
    for name in names:
        assert json.dumps(name) not in raw, name
    # Listing and retention still work from what stays in clear; verification unseals with the key.
    listed = json.loads(cli.run(["list", "--destination", site.name, "--json"], env).stdout)
    assert [(r["id"], r["good"]) for r in listed] == [(backup["id"], True)]
    cli.run(["verify", "--destination", site.name, "--level", "archive"], env)
