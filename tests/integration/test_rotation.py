"""Key rotation reaches every copy (issue #16): ``rekey`` re-encrypts the local backup and its copies at an S3
stand-in (SeaweedFS) and a second directory, in both encryption modes; a destination that cannot be reached
fails the run naming it and ``sync`` finishes the job; ``health`` warns while a retired key is still needed;
and a rekey killed with SIGKILL at each of its steps leaves a backup that restores and a next run that cleans up.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid

import pytest

from tests.integration import cli
from tests.integration.test_destinations import destination_env, servers  # noqa: F401 # pylint: disable=unused-import
from tests.integration.test_kill_anywhere import World
from tests.support import load_sample
from tests.support.compare import table_checksums
from tests.support.standins import free_port


@pytest.fixture(scope="module", name="source")
def _source(pg15):
    name = "rot_%s" % uuid.uuid4().hex[:8]
    load_sample(pg15, name)
    yield name
    for db in pg15.databases():
        if db.startswith(name):
            pg15.drop_db(db)


def _s3(server, prefix):
    """The S3 destination as the test reads it (its own client, not the command's)."""
    from seawall_pgbackup.config.destinations import parse_one  # pylint: disable=import-outside-toplevel
    from seawall_pgbackup.store import open_destination  # pylint: disable=import-outside-toplevel

    os.environ.update(server.env())
    return open_destination(parse_one("s3", {"bucket": "backups", "endpoint": server.endpoint, "prefix": prefix}))


def _dir_store(tmp_path, prefix):
    from seawall_pgbackup.store import LocalStore  # pylint: disable=import-outside-toplevel

    return LocalStore("local", str(tmp_path / "second-disk" / prefix))


def _assert_copy_under(store, backup_id, names_before, new_key, old_key):
    """The destination's manifest names ``new_key`` for the files (raw bytes); no object of the old files is left,
    and every object of the backup there is named by that manifest."""
    raw = store.read_bytes("full/%s.json" % backup_id)
    document = json.loads(raw)
    assert document["encryption"]["key_id"] == new_key, document["encryption"]
    assert ('"key_id": "%s"' % new_key).encode() in raw
    assert "auth" in document  # signed
    keys = {info.key for info in store.list("full/") if info.key.startswith("full/%s." % backup_id)}
    assert keys == {"full/%s.json" % backup_id} | {"full/" + f["name"] for f in document["files"]}, keys
    assert not keys & {"full/" + n for n in names_before}
    assert old_key != new_key


def _keys_check(env, retired):
    proc = cli.run(["health", "--json"], dict(env, BACKUP_ENCRYPTION_RETIRED_KEYS=retired), check=False)
    report = json.loads(proc.stdout)
    return [c for c in report["checks"] if c["check"] == "keys"][0]


def _modes(mode, tmp_path, env):
    """(env before, env after the rotation, old key id, new key id, forget the old key)."""
    secure = tmp_path / "secure"
    secure.mkdir()
    if mode == "aes":
        keyring = secure / "keys"
        env = dict(env, BACKUP_ENCRYPTION_KEYRING=str(keyring))
        old = json.loads(cli.run(["keygen", "--keyring", str(keyring), "--json"], env).stdout)
        return env, None, old, keyring, lambda: os.unlink(old["path"])
    plain = cli.cli_env(None, tmp_path / "nowhere")
    first = json.loads(cli.run(["keygen", "--age", str(secure / "first.txt"), "--json"], plain).stdout)
    second = json.loads(cli.run(["keygen", "--age", str(secure / "second.txt"), "--json"], plain).stdout)
    signing = secure / "signing.pem"
    cli.run(["keygen", "--signing", "--output", str(signing)], plain)
    both = secure / "both.txt"
    both.write_text((secure / "first.txt").read_text() + (secure / "second.txt").read_text())
    both.chmod(0o600)
    before = dict(env, BACKUP_ENCRYPTION_MODE="age", BACKUP_ENCRYPTION_RECIPIENTS=first["recipient"],
                  BACKUP_ENCRYPTION_SIGNING_KEY_FILE=str(signing), BACKUP_ENCRYPTION_IDENTITY_FILE=str(both))
    after = dict(before, BACKUP_ENCRYPTION_RECIPIENTS=second["recipient"])
    only_second = dict(after, BACKUP_ENCRYPTION_IDENTITY_FILE=str(secure / "second.txt"))
    return before, (after, second, only_second), first, None, None


@pytest.mark.parametrize("mode", ["aes", "age"])
def test_rekey_reaches_every_copy_and_the_old_key_can_go(mode, servers, source, pg15, tmp_path):  # noqa: F811
    prefix = "rot-%s" % uuid.uuid4().hex[:8]
    dests = dict(destination_env("s3", servers["s3"], prefix, tmp_path),
                 **destination_env("dir", None, prefix, tmp_path))
    base = cli.cli_env(pg15.url(source), tmp_path / "backups", BACKUP_ENCRYPTION="true",
                       PGPASSFILE=str(pg15.passfile), **dests)
    env, age, old, keyring, forget = _modes(mode, tmp_path, base)
    backup = cli.create(env, "full")
    assert sorted(c["destination"] for c in backup["copies"]) == ["local", "s3"]
    assert {c["key_id"] for c in backup["copies"]} == {old["key_id"]}
    if mode == "aes":
        new = json.loads(cli.run(["keygen", "--keyring", str(keyring), "--json"], env).stdout)
        after, reader = env, env
    else:
        after, new, reader = age
    names_before = [f["name"] for f in backup["files"]]

    warned = _keys_check(after, old["key_id"])
    assert warned["status"] == "warning", warned
    assert "1 local backup depends on retired key id %s" % old["key_id"] in warned["reason"]
    assert "2 copies at destinations depend on retired key id %s" % old["key_id"] in warned["reason"]

    plan = json.loads(cli.run(["rekey", "--all", "--dry-run", "--json"], after).stdout)
    assert [(r["id"], r["changed"], r["destinations"]) for r in plan] == [(backup["id"], True, ["local", "s3"])]
    rows = json.loads(cli.run(["rekey", "--all", "--json"], after).stdout)
    assert [(r["id"], r["changed"], r["from"], r["to"]) for r in rows] == [
        (backup["id"], True, old["key_id"], new["key_id"])]
    assert sorted((d["destination"], d["ok"]) for d in rows[0]["destinations"]) == [("local", True), ("s3", True)]
    local = json.loads(open(tmp_path / "backups" / "full" / (backup["id"] + ".json"), encoding="utf-8").read())
    assert {c["destination"]: c["key_id"] for c in local["copies"]} == {"local": new["key_id"], "s3": new["key_id"]}
    _assert_copy_under(_s3(servers["s3"], prefix), backup["id"], names_before, new["key_id"], old["key_id"])
    _assert_copy_under(_dir_store(tmp_path, prefix), backup["id"], names_before, new["key_id"], old["key_id"])

    done = _keys_check(after, old["key_id"])
    assert done["status"] == "ok", done
    again = json.loads(cli.run(["rekey", "--all", "--json"], after).stdout)
    assert [r["changed"] for r in again] == [False] and "destinations" not in again[0]
    assert json.loads(cli.run(["sync", "--json"], after).stdout)["present"] == 2

    # The old key goes; the backup directory is lost too: each destination alone restores with the new key.
    if forget:
        forget()
    shutil.rmtree(tmp_path / "backups")
    verified = json.loads(cli.run(["verify", "--destination", "local", "--level", "archive", "--json"],
                                  reader).stdout)
    assert [(v["id"], v["ok"]) for v in verified] == [(backup["id"], True)], verified
    target = source + "_" + mode
    cli.run(["restore", "latest", "--destination", "s3", "--target-url", pg15.url(target, with_password=False)],
            reader)
    assert table_checksums(pg15, target) == table_checksums(pg15, source)


def test_an_unreachable_destination_fails_the_rekey_by_name_and_sync_finishes(servers, source, pg15,  # noqa: F811
                                                                               tmp_path):
    prefix = "rot-%s" % uuid.uuid4().hex[:8]
    keyring = tmp_path / "secure" / "keys"
    env = cli.cli_env(pg15.url(source), tmp_path / "backups", BACKUP_ENCRYPTION="true",
                      BACKUP_ENCRYPTION_KEYRING=str(keyring), PGPASSFILE=str(pg15.passfile),
                      **destination_env("s3", servers["s3"], prefix, tmp_path))
    old = json.loads(cli.run(["keygen", "--keyring", str(keyring), "--json"], env).stdout)
    backup = cli.create(env, "full")
    new = json.loads(cli.run(["keygen", "--keyring", str(keyring), "--json"], env).stdout)
    manifest_path = tmp_path / "backups" / "full" / (backup["id"] + ".json")

    down = dict(env, BACKUP_S3_ENDPOINT="http://127.0.0.1:%d" % free_port(), BACKUP_UPLOAD_RETRIES="1",
                BACKUP_UPLOAD_RETRY_TIMEOUT="3")
    line = cli.error_line(cli.run(["rekey", "--all"], down, check=False))
    assert "re-encrypted here" in line and "destination 's3'" in line, line
    local = json.loads(manifest_path.read_text())
    assert local["encryption"]["key_id"] == new["key_id"]  # the local rekey stands
    assert [c for c in local.get("copies", []) if c["destination"] == "s3"] == []  # forgotten: sync uploads again
    runs = (tmp_path / "backups" / "logs").glob("*")
    assert any("copy-failed" in p.read_text(errors="replace") for p in runs if p.is_file())
    cli.run(["verify", backup["id"], "--level", "archive"], env)

    synced = json.loads(cli.run(["sync", "--json"], env).stdout)
    assert [c["id"] for c in synced["copied"]] == [backup["id"]] and synced["failed"] == []
    store = _s3(servers["s3"], prefix)
    _assert_copy_under(store, backup["id"], [f["name"] for f in backup["files"]], new["key_id"], old["key_id"])

    # A copy recorded without its key (before copies named one) is stale: sync uploads it again.
    from seawall_pgbackup.config.settings import load_config  # pylint: disable=import-outside-toplevel
    from seawall_pgbackup.repo.catalog import open_repository  # pylint: disable=import-outside-toplevel

    repo = open_repository(load_config(env=env))
    current = repo.backups()[0]
    current.manifest.copies[0].key_id = None
    repo.save(current)
    plan = json.loads(cli.run(["sync", "--dry-run", "--json"], env).stdout)
    assert [(c["id"], c.get("stale")) for c in plan["to_copy"]] == [(backup["id"], True)]
    synced = json.loads(cli.run(["sync", "--json"], env).stdout)
    assert [c["id"] for c in synced["copied"]] == [backup["id"]] and synced["copied"][0]["uploaded"] == 0
    assert json.loads(manifest_path.read_text())["copies"][0]["key_id"] == new["key_id"]

    os.unlink(old["path"])
    verified = json.loads(cli.run(["verify", "--destination", "s3", "--level", "archive", "--json"], env).stdout)
    assert [(v["id"], v["ok"]) for v in verified] == [(backup["id"], True)], verified


REKEY_STEPS = ["rekey-partial", "rekey-copied", "rekey-saved", "rekey-removed", "copy-uploaded", "rekey-uploaded"]


@pytest.mark.parametrize("step", REKEY_STEPS)
def test_rekey_killed_at_every_step(pg15, source, tmp_path, step):
    world = World(pg15, source, tmp_path, BACKUP_LOCAL_PATH=str(tmp_path / "work" / "second"))
    keyring = tmp_path / "work" / "keys"
    world.env.update(BACKUP_ENCRYPTION="true", BACKUP_ENCRYPTION_KEYRING=str(keyring))
    cli.run(["keygen", "--keyring", str(keyring)], world.env)
    backup = cli.create(world.env, "full")
    new = json.loads(cli.run(["keygen", "--keyring", str(keyring), "--json"], world.env).stdout)
    world.kill_at(["rekey", "--all"], step)
    assert list(world.good()) == [backup["id"]]  # listed, and the files its manifest names are whole
    cli.run(["verify", backup["id"], "--level", "restore"], world.env)
    world.assert_outside_untouched()

    out = json.loads(cli.run(["rekey", "--all", "--json"], world.env).stdout)  # no cleanup in between
    assert [r["id"] for r in out] == [backup["id"]]
    world.assert_no_leftovers()  # the killed run's copies, partials and old files are gone
    local = world.files_of(world.listed()[backup["id"]])
    manifest = json.loads((world.dir / "full" / (backup["id"] + ".json")).read_text())
    assert manifest["encryption"]["key_id"] == new["key_id"]
    assert manifest["copies"][0]["key_id"] == new["key_id"]
    second = tmp_path / "work" / "second" / "full"
    assert sorted(os.listdir(second)) == sorted([backup["id"] + ".json"] + list(local))
    cli.run(["verify", "--destination", "local", "--level", "checksum"], world.env)
    cli.run(["verify", backup["id"], "--level", "restore"], world.env)
    world.assert_outside_untouched()


def test_migration_signs_and_binds_old_backups_and_their_copies(servers, source, pg15, tmp_path):  # noqa: F811
    prefix = "rot-%s" % uuid.uuid4().hex[:8]
    env = cli.cli_env(pg15.url(source), tmp_path / "backups", PGPASSFILE=str(pg15.passfile),
                      **destination_env("s3", servers["s3"], prefix, tmp_path))
    plain = cli.create(env, "full")  # before encryption and signing: unsigned, unencrypted, copied to s3
    assert "auth" not in plain and [c["destination"] for c in plain["copies"]] == ["s3"]
    keyring = tmp_path / "secure" / "keys"
    enc = dict(env, BACKUP_ENCRYPTION="true", BACKUP_ENCRYPTION_KEYRING=str(keyring))
    key = json.loads(cli.run(["keygen", "--keyring", str(keyring), "--json"], enc).stdout)
    assert cli.listing(enc) == []  # not trusted until migrated, here and at the destination
    assert json.loads(cli.run(["list", "--destination", "s3", "--json"], enc).stdout) == []

    plan = json.loads(cli.run(["rekey", "--all", "--dry-run", "--json", "--accept-unsigned"], enc).stdout)
    assert [(r["id"], r["changed"], r["destinations"]) for r in plan] == [(plain["id"], True, ["s3"])]
    rows = json.loads(cli.run(["rekey", "--all", "--json", "--accept-unsigned"], enc).stdout)
    assert [(r["id"], r["changed"], [d["ok"] for d in r["destinations"]]) for r in rows] == [
        (plain["id"], True, [True])]
    assert [b["id"] for b in cli.listing(enc)] == [plain["id"]]  # signed now: no option needed
    remote = json.loads(cli.run(["list", "--destination", "s3", "--json"], enc).stdout)
    assert [(b["id"], b["encryption"]["key_id"]) for b in remote] == [(plain["id"], key["key_id"])]
    _assert_copy_under(_s3(servers["s3"], prefix), plain["id"], [f["name"] for f in plain["files"]],
                       key["key_id"], None)

    # An encrypted backup whose manifest is not signed (as before manifests were): rewritten under the same key.
    second = cli.create(enc, "full")
    from seawall_pgbackup.codec.authn import render_manifest  # pylint: disable=import-outside-toplevel

    path = tmp_path / "backups" / "full" / (second["id"] + ".json")
    document = json.loads(path.read_text())
    document.pop("auth")
    path.write_bytes(render_manifest(document))
    assert [b["id"] for b in cli.listing(enc)] == [plain["id"]]
    rows = json.loads(cli.run(["rekey", "--all", "--json", "--accept-unsigned"], enc).stdout)
    assert [(r["id"], r["changed"]) for r in rows] == [(plain["id"], False), (second["id"], True)]
    assert "not signed" in rows[1]["details"] and rows[1]["from"] == rows[1]["to"] == key["key_id"]
    again = json.loads(cli.run(["rekey", "--all", "--json"], enc).stdout)
    assert [r["changed"] for r in again] == [False, False] and not any("destinations" in r for r in again)
    remote = json.loads(cli.run(["list", "--destination", "s3", "--json"], enc).stdout)
    assert [b["id"] for b in remote] == [plain["id"], second["id"]]
    cli.run(["verify", "--destination", "s3", "--level", "checksum"], enc)
