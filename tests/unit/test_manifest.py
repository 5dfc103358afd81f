"""Typed records: a manifest (run record, drill report) is parsed and validated once, strictly, when read.

The repository is untrusted input: every wrong field is a ManifestError naming the file and the field,
never a KeyError or TypeError later; ids and file names must be ours (no path leaves the backup's directory).
"""

from __future__ import annotations

import ast
import copy
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seawall_pgbackup.core.clock import iso
from seawall_pgbackup.core.errors import BackupError
from seawall_pgbackup.model.drillreport import DrillReport, read_latest, write_report
from seawall_pgbackup.model.manifest import (FORMAT_VERSION, Backup, Copy, FileEntry, Manifest, ManifestError,
                                             Verification, check_backup, load_backup, read_backup)
from seawall_pgbackup.model.record import RecordError
from seawall_pgbackup.model.runrecord import RunRecord, read_run, read_runs, run_path, write_run
from seawall_pgbackup.repo.catalog import Repository

ENGINE = Path(__file__).resolve().parents[2] / "plugins" / "module_utils" / "pgbackup"
T0 = datetime(2026, 11, 26, 2, 0, 0, 123456, tzinfo=timezone.utc)
ID = "full-app-20261126T020000Z"


def real_manifest() -> dict:
    """A full backup's manifest exactly as ops/backup.py writes one (its keys are checked against the writer below)."""
    return {
        "format_version": FORMAT_VERSION,
        "id": ID,
        "type": "full",
        "method": "logical",
        "status": "ok",
        "database": "app",
        "created_at": iso(T0),
        "finished_at": "2026-11-26T02:00:03.500000Z",
        "duration_seconds": 3.377,
        "host": "db1",
        "tool": {"name": "seawall-pgbackup", "version": "1.0.0"},
        "source": {"url": "postgresql://backup@db1:5432/app", "user": "backup", "superuser": True},
        "server": {"version": "PostgreSQL 15.8", "version_num": 150008, "major": 15,
                   "system_identifier": "7412345678901234567", "encoding": "UTF8", "collate": "C.UTF-8",
                   "ctype": "C.UTF-8"},
        "client": {"version": "15.8", "major": 15, "bin_dir": "/usr/lib/postgresql/15/bin"},
        "files": [
            {"name": ID + ".dump.zst.enc", "role": "database", "format": "custom", "compression": "zstd",
             "size": 52311, "sha256": "a" * 64, "raw_size": 190211},
            {"name": ID + ".globals.sql.zst.enc", "role": "globals", "format": "plain", "compression": "zstd",
             "size": 911, "sha256": "b" * 64, "raw_size": 2990},
        ],
        "compression": "zstd",
        "encryption": {"algorithm": "aes-256-gcm", "format": "seawall-aes-256-gcm-chunked-v1", "key_id": "k1"},
        "parent": None,
        "user_objects": 42,
        "database_size": 8000000,
        "table_rows": {"public.players": 1000, "chat.messages": 0},
        "database_sql": ["ALTER DATABASE app SET work_mem TO '8MB';"],
        "globals": {"role_passwords": True},
        "warnings": [],
        "verification": None,
    }


def _error(document, match: str) -> None:
    with pytest.raises(ManifestError, match=match):
        Manifest.from_dict(document, "/b/full/%s.json" % ID)


# ----------------------------------------------------------------------------- round trip

def test_a_real_manifest_round_trips_exactly():
    document = real_manifest()
    manifest = Manifest.from_dict(copy.deepcopy(document))
    assert manifest.to_dict() == document
    assert manifest.kind == "full" and manifest.created_at == T0 and manifest.size == 52311 + 911
    assert manifest.file("globals").format == "plain" and manifest.file("wal") is None
    assert manifest.server.major == 15 and manifest.client.major == 15 and manifest.globals.role_passwords is True
    assert manifest.encryption_of(manifest.files[0]).key_id == "k1"
    assert manifest.table_rows == {"public.players": 1000, "chat.messages": 0}


def test_the_writer_and_the_model_name_the_same_keys():
    """ops/backup.py's manifest literal holds exactly the keys the model writes for a new backup."""
    tree = ast.parse((ENGINE / "ops" / "backup.py").read_text())
    literals = [node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "manifest" for t in node.targets)
                and isinstance(node.value, ast.Dict)]
    assert len(literals) == 1
    written = {k.value for k in literals[0].keys}
    assert written == set(real_manifest()) | {"repository"}  # optional in the model: older manifests lack it
    fresh = Manifest(id=ID, kind="full", created_at=T0, files=[], repository="default")
    assert set(fresh.to_dict()) == written  # a manifest built in code writes the same shape


def test_unknown_keys_survive_a_save(tmp_path):
    document = real_manifest()
    document["chain"] = {"lsn": "0/3000028"}
    document["files"][0]["block_size"] = 8192
    document["encryption"]["kdf"] = "none"
    backup = Backup(copy.deepcopy(document), str(tmp_path / (ID + ".json")))
    backup.manifest.verification = Verification.from_dict({"level": "checksum", "at": iso(T0), "ok": True,
                                                           "details": "checksums match", "duration_seconds": 0.5,
                                                           "checker": "v2"})
    backup.save()
    saved = json.loads((tmp_path / (ID + ".json")).read_text())
    assert saved["chain"] == {"lsn": "0/3000028"} and saved["files"][0]["block_size"] == 8192
    assert saved["encryption"]["kdf"] == "none" and saved["verification"]["checker"] == "v2"
    assert load_backup(str(tmp_path / (ID + ".json"))).manifest.extra == {"chain": {"lsn": "0/3000028"}}


def test_absent_keys_are_not_added_and_set_ones_are_written():
    minimal = {"format_version": 1, "id": ID, "type": "full", "created_at": iso(T0), "files": []}
    manifest = Manifest.from_dict(dict(minimal))
    assert manifest.to_dict() == minimal
    manifest.copies.append(Copy.from_dict({"destination": "s3", "uri": "s3://b/full/x.json",
                                           "copied_at": iso(T0), "type": "s3"}))
    manifest.status = "ok"
    assert manifest.to_dict() == dict(minimal, status="ok", copies=[
        {"destination": "s3", "uri": "s3://b/full/x.json", "copied_at": iso(T0), "type": "s3"}])


def test_backup_properties_and_summary(tmp_path):
    path = str(tmp_path / "full" / (ID + ".json"))
    backup = Backup(real_manifest(), path)
    assert (backup.id, backup.kind, backup.database, backup.created_at, backup.size) == (ID, "full", "app", T0, 53222)
    assert backup.good and backup.file("database").name == ID + ".dump.zst.enc"
    assert backup.file_path(backup.file("database")) == str(tmp_path / "full" / (ID + ".dump.zst.enc"))
    summary = backup.summary()
    assert summary["created_at"] == iso(T0) and summary["finished_at"] == "2026-11-26T02:00:03.500000Z"
    assert summary["encryption"] == real_manifest()["encryption"] and summary["verification"] is None
    assert summary["sha256"] == "a" * 64 and summary["server_version"] == "PostgreSQL 15.8"
    json.dumps(summary)  # the listing stays plain JSON
    backup.manifest.verification = Verification.from_dict({"level": "archive", "at": iso(T0), "ok": False,
                                                           "details": "pg_restore failed"})
    assert not backup.good and backup.bad_reason == "pg_restore failed"


# ----------------------------------------------------------------------------- strictness

@pytest.mark.parametrize("key", ["format_version", "id", "type", "created_at", "files"])
def test_missing_required_fields_are_named(key):
    document = real_manifest()
    del document[key]
    _error(document, r"^/b/full/%s.json: %s is missing$" % (ID, key))


WRONG_TYPES = [
    ("id", None, "id must be a string, not null"),
    ("type", 3, "type must be a string, not integer"),
    ("created_at", 12345, "created_at must be an ISO time string, not integer"),
    ("created_at", "yesterday", "created_at is not a time of the form"),
    ("finished_at", "2026-13-40T00:00:00.000000Z", "finished_at is not a time of the form"),
    ("files", {"name": "x"}, "files must be a list, not object"),
    ("files", None, "files must be a list, not null"),
    ("status", True, "status must be a string, not boolean"),
    ("database", None, "database must be a string, not null"),
    ("duration_seconds", "3.3", "duration_seconds must be a number, not string"),
    ("duration_seconds", False, "duration_seconds must be a number, not boolean"),
    ("host", 1, "host must be a string, not integer"),
    ("tool", "seawall", "tool must be an object, not string"),
    ("source", {"superuser": "yes"}, r"source.superuser must be a boolean, not string"),
    ("server", {"major": 15.0}, r"server.major must be an integer, not number"),
    ("server", {"major": True}, r"server.major must be an integer, not boolean"),
    ("client", {"major": "15"}, r"client.major must be an integer, not string"),
    ("compression", ["zstd"], "compression must be a string, not list"),
    ("encryption", {"key_id": "k1"}, r"encryption.algorithm is missing"),
    ("encryption", {"algorithm": "aes-256-gcm", "key_ids": "k1"}, r"encryption.key_ids must be a list, not string"),
    ("parent", 7, "parent must be a string, not integer"),
    ("parent", "../full-app-20261126T020000Z", "parent '../full-app-20261126T020000Z' is not a backup id"),
    ("user_objects", "42", "user_objects must be an integer, not string"),
    ("user_objects", -1, r"user_objects is negative \(-1\)"),
    ("database_size", 1.5, "database_size must be an integer, not number"),
    ("table_rows", [], "table_rows must be an object, not list"),
    ("table_rows", {"public.t": "3"}, r"table_rows.public.t must be an integer, not string"),
    ("database_sql", "ALTER DATABASE", "database_sql must be a list, not string"),
    ("database_sql", [1], r"database_sql\[0\] must be a string, not integer"),
    ("globals", {"role_passwords": 1}, r"globals.role_passwords must be a boolean, not integer"),
    ("warnings", None, "warnings must be a list, not null"),
    ("warnings", [None], r"warnings\[0\] must be a string, not null"),
    ("verification", {"level": "checksum", "at": iso(T0)}, r"verification.ok is missing"),
    ("verification", {"level": "checksum", "at": iso(T0), "ok": "true"}, r"verification.ok must be a boolean"),
    ("verification", {"level": "checksum", "at": 0, "ok": True}, r"verification.at must be an ISO time string"),
    ("verification", [], r"verification must be an object, not list"),
    ("copies", [{"uri": "s3://x"}], r"copies\[0\].destination is missing"),
    ("copies", [{"destination": "s3", "copied_at": 1}], r"copies\[0\].copied_at must be an ISO time string"),
    ("rekeyed", [{"from": "k1"}], r"rekeyed\[0\].at is missing"),
]


@pytest.mark.parametrize("key,value,message", WRONG_TYPES, ids=["%s=%r" % (k, v) for k, v, _m in WRONG_TYPES])
def test_every_wrong_field_is_named(key, value, message):
    document = real_manifest()
    document[key] = value
    _error(document, r"^/b/full/%s.json: %s" % (ID, message))


FILE_FIELDS = [
    ("name", None, r"files\[1\].name must be a string, not null"),
    ("size", "911", r"files\[1\].size must be an integer, not string"),
    ("size", -1, r"files\[1\].size is negative"),
    ("sha256", 5, r"files\[1\].sha256 must be a string, not integer"),
    ("role", [], r"files\[1\].role must be a string, not list"),
    ("raw_size", 2.0, r"files\[1\].raw_size must be an integer, not number"),
    ("encryption", "aes", r"files\[1\].encryption must be an object, not string"),
]


@pytest.mark.parametrize("key,value,message", FILE_FIELDS, ids=["%s=%r" % (k, v) for k, v, _m in FILE_FIELDS])
def test_every_wrong_file_entry_field_is_named(key, value, message):
    document = real_manifest()
    document["files"][1][key] = value
    _error(document, message)


@pytest.mark.parametrize("key", ["name", "size", "sha256"])
def test_a_file_entry_without_a_required_field(key):
    document = real_manifest()
    del document["files"][0][key]
    _error(document, r"files\[0\].%s is missing" % key)


@pytest.mark.parametrize("name,why", [
    ("../x", "is not a plain file name"),
    ("/etc/passwd", "is not a plain file name"),
    ("a/b", "is not a plain file name"),
    (ID + ".dump/../../x", "is not a plain file name"),
    ("..\\x", "is not a plain file name"),
    (".hidden", "does not start with the backup id"),
    ("..", "is not a plain file name"),
    ("", "does not start with the backup id"),
    ("full-app-20261125T020000Z.dump.gz", "does not start with the backup id"),
    (ID + "dump.gz", "does not start with the backup id"),
    (ID + ".json", "is the manifest itself"),
    (ID + ".dump\0.gz", "is not a plain file name"),
])
def test_file_names_must_be_the_backups_own(name, why):
    document = real_manifest()
    document["files"][0]["name"] = name
    _error(document, r"files\[0\].name .*%s" % why)


def test_a_file_listed_twice_is_refused():
    document = real_manifest()
    document["files"][1]["name"] = document["files"][0]["name"]
    _error(document, r"files\[1\].name .* is listed twice")


@pytest.mark.parametrize("backup_id", [
    "full", "full-app", "full-app-2026-11-26", "full-app-20261126T020000", "full-app-20261126T020000Z-0",
    "full-app-20261126T020000Z-x", "../full-app-20261126T020000Z", "full-a/b-20261126T020000Z",
    "Full-app-20261126T020000Z", ".full-app-20261126T020000Z", "full-app-20261126T020000Z.json", "",
])
def test_ids_must_match_our_naming(backup_id):
    document = real_manifest()
    document["id"] = backup_id
    _error(document, r"id .* is not a backup id")


@pytest.mark.parametrize("backup_id", ["full-app-20261126T020000Z-2", "full-my.db_x-20261126T020000Z-17",
                                       "full-db-20261126T020000Z"])
def test_ids_the_engine_makes_are_accepted(backup_id):
    document = real_manifest()
    document["id"] = backup_id
    for entry in document["files"]:
        entry["name"] = backup_id + entry["name"][len(ID):]
    assert Manifest.from_dict(document).id == backup_id


def test_the_id_must_belong_to_the_kind():
    document = real_manifest()
    document["type"] = "schema"
    _error(document, "id 'full-app-20261126T020000Z' does not belong to a schema backup")
    document["type"] = "../full"
    _error(document, "type '../full' is not a backup kind")


@pytest.mark.parametrize("version,message", [
    (2, "format_version 2 is not readable by this version \\(it reads 1\\)"),
    (0, "format_version 0 is not readable"),
    ("1", "format_version must be an integer, not '1'"),
    (True, "format_version must be an integer, not True"),
    (None, "format_version must be an integer, not None"),
])
def test_the_format_version_is_checked_first(version, message):
    document = real_manifest()
    document["format_version"] = version
    document["id"] = None  # a newer format is refused as such, not for its fields
    _error(document, message)


@pytest.mark.parametrize("document", [None, [], "manifest", 1, True])
def test_a_document_that_is_no_object(document):
    _error(document, "manifest must be an object")


# ----------------------------------------------------------------------------- reading files

def test_load_keeps_its_contract_and_the_reason_is_kept(tmp_path):
    repo = Repository(str(tmp_path))
    repo.prepare()
    good = Backup(real_manifest(), repo.manifest_path("full", ID))
    good.save()
    bad_id = "full-app-20261127T020000Z"
    (Path(repo.kind_dir("full")) / (bad_id + ".json")).write_text(json.dumps(dict(real_manifest(), created_at=5)))
    (Path(repo.kind_dir("full")) / "full-app-20261128T020000Z.json").write_text("{not json")
    renamed = Path(repo.kind_dir("full")) / "full-app-20261129T020000Z.json"
    renamed.write_text(json.dumps(real_manifest()))  # the manifest of another id, under this name
    assert [b.id for b in repo.backups(include_bad=True)] == [ID]
    assert load_backup(repo.manifest_path("full", bad_id)) is None
    assert check_backup(repo.manifest_path("full", bad_id)) == (
        None, "created_at must be an ISO time string, not integer")
    reasons = dict((os.path.basename(p), r) for p, r in repo.invalid_manifests())
    assert reasons["full-app-20261127T020000Z.json"] == "created_at must be an ISO time string, not integer"
    assert reasons["full-app-20261128T020000Z.json"].startswith("not valid JSON")
    assert reasons["full-app-20261129T020000Z.json"] == "the manifest of %s is not named %s.json" % (ID, ID)
    assert len(reasons) == 3
    with pytest.raises(ManifestError, match="cannot be read"):
        read_backup(str(tmp_path / "full" / "nothing.json"))
    with pytest.raises(BackupError, match=r"is not a readable seawall manifest: created_at must be"):
        repo.find(repo.manifest_path("full", bad_id))
    # The files of an invalid manifest are never taken for leftovers.
    (Path(repo.kind_dir("full")) / (bad_id + ".dump.gz")).write_bytes(b"x")
    assert repo.leftovers() == []


def test_a_backup_built_from_a_wrong_dict_raises():
    with pytest.raises(ManifestError, match=r"^/x/full/y.json: files\[0\].name '../../etc/passwd' is not a plain"):
        Backup(dict(real_manifest(), files=[{"name": "../../etc/passwd", "size": 1, "sha256": "x"}]),
               "/x/full/y.json")


# ----------------------------------------------------------------------------- property

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20)
KEYS = st.sampled_from(sorted(real_manifest()) + ["copies", "rekeyed"])


def _mutations():
    """A real manifest with some fields (top level or in a file entry) replaced by arbitrary JSON."""
    top = st.dictionaries(KEYS, JSON, max_size=4)
    entry = st.dictionaries(st.sampled_from(["name", "size", "sha256", "role", "format", "compression", "raw_size",
                                             "encryption"]), JSON, max_size=3)
    return st.tuples(top, entry, st.booleans())


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_arbitrary_json_raises_only_manifest_error(document):
    try:
        manifest = Manifest.from_dict(document)
    except ManifestError:
        return
    assert Manifest.from_dict(manifest.to_dict()) == manifest


@settings(max_examples=300, deadline=None)
@given(_mutations())
def test_mutated_manifests_raise_only_manifest_error_and_round_trip(mutation):
    top, entry, drop = mutation
    document = real_manifest()
    document.update(top)
    if isinstance(document.get("files"), list) and document["files"] and isinstance(document["files"][0], dict):
        document["files"][0].update(entry)
        if drop:
            document["files"][0].pop("sha256", None)
    try:
        manifest = Manifest.from_dict(copy.deepcopy(document))
    except ManifestError:
        return
    assert manifest.to_dict() == document  # what loads, saves unchanged
    assert Manifest.from_dict(manifest.to_dict()) == manifest


# every key the model reads (an "unknown" key named like one is parsed as that field, not kept in extra)
KNOWN = set(real_manifest()) | {"copies", "rekeyed", "repository", "sealed", "auth", "start_lsn", "stop_lsn",
                                "timeline"}
TEXT = st.text(max_size=20)
VALID = st.fixed_dictionaries({}, optional={
    "database": TEXT, "status": st.sampled_from(["ok", "failed"]), "host": st.none() | TEXT,
    "duration_seconds": st.none() | st.floats(min_value=0, allow_nan=False, allow_infinity=False),
    "warnings": st.lists(TEXT, max_size=3), "table_rows": st.none() | st.dictionaries(TEXT, st.integers(0, 2 ** 40)),
    "database_sql": st.none() | st.lists(TEXT, max_size=3), "user_objects": st.none() | st.integers(0, 10 ** 6),
    "verification": st.none() | st.fixed_dictionaries(
        {"level": TEXT, "at": st.just(iso(T0)), "ok": st.booleans()},
        optional={"details": st.none() | TEXT, "rto_seconds": st.none() | st.floats(0, 1e6)}),
    "copies": st.lists(st.fixed_dictionaries({"destination": TEXT}, optional={"uri": TEXT}), max_size=2),
})


@settings(max_examples=150, deadline=None)
@given(VALID, st.dictionaries(TEXT.filter(lambda k: k not in KNOWN), JSON, max_size=3))
def test_well_typed_manifests_load_and_save_unchanged(fields, unknown):
    document = dict(real_manifest(), **fields)
    document.update(unknown)
    manifest = Manifest.from_dict(copy.deepcopy(document))
    assert manifest.to_dict() == document and manifest.extra == unknown


# ----------------------------------------------------------------------------- run records and drill reports

def _run(**fields) -> dict:
    return dict({"job": "create-full", "command": "create", "kind": "full", "database": "app", "host": "db1",
                 "status": "ok", "started_at": iso(T0), "finished_at": iso(T0), "exit_code": 0,
                 "duration_seconds": 3.2, "step": None, "error": None, "summary": "backup x: 3 bytes in 1.0 s"},
                **fields)


def test_run_records_round_trip_and_read_typed(tmp_path):
    write_run(str(tmp_path), _run())
    write_run(str(tmp_path), {"job": "verify", "command": "verify", "kind": None, "database": None, "host": "db1",
                              "status": "running", "started_at": iso(T0), "pid": 4242})
    record = read_run(str(tmp_path), "create-full")
    assert isinstance(record, RunRecord) and record.started_at == T0 and record.exit_code == 0
    assert json.loads(Path(run_path(str(tmp_path), "create-full")).read_text()) == _run()
    runs = [(r.job, r.status, r.pid) for r in read_runs(str(tmp_path))]
    assert runs == [("create-full", "ok", None), ("verify", "running", 4242)]


@pytest.mark.parametrize("fields,message", [
    ({"status": "fine"}, "status 'fine' is not one of running, ok, failed, warning, critical"),
    ({"job": "../x"}, "job '../x' is not a job name"),
    ({"started_at": 5}, "started_at must be an ISO time string, not integer"),
    ({"exit_code": "0"}, "exit_code must be an integer, not string"),
    ({"duration_seconds": None, "pid": 1.5}, "pid must be an integer, not number"),
])
def test_wrong_run_records_are_refused_on_write_and_skipped_on_read(tmp_path, fields, message):
    with pytest.raises(RecordError, match=message):
        write_run(str(tmp_path), _run(**fields))
    Path(run_path(str(tmp_path), "create-full")).write_text(json.dumps(_run(**fields)))
    assert read_run(str(tmp_path), "create-full") is None and read_runs(str(tmp_path)) == []


def test_a_run_record_under_another_jobs_name_is_not_read(tmp_path):
    Path(run_path(str(tmp_path), "verify")).write_text(json.dumps(_run()))
    assert read_run(str(tmp_path), "verify") is None


def test_drill_reports_round_trip_and_parse_strictly(tmp_path):
    report = {"kind": "dr-drill", "backup_id": ID, "database": "app", "backup_created_at": iso(T0),
              "server": "db2:5432", "started_at": iso(T0), "finished_at": iso(T0), "ok": True, "rto_seconds": 12.5,
              "duration_seconds": 14.0, "details": "restored 42 objects"}
    assert read_latest(str(tmp_path)) is None
    write_report(str(tmp_path), report, "20261126T020000Z")
    assert json.loads((tmp_path / "drill-20261126T020000Z.json").read_text()) == report
    latest = read_latest(str(tmp_path))
    assert isinstance(latest, DrillReport) and latest.ok and latest.rto_seconds == 12.5 and latest.finished_at == T0
    (tmp_path / "drill-latest.json").write_text(json.dumps(dict(report, ok="yes")))
    with pytest.raises(RecordError, match=r"drill-latest.json: ok must be a boolean, not string"):
        read_latest(str(tmp_path))
    (tmp_path / "drill-latest.json").write_text(json.dumps(dict(report, rto_seconds="12")))
    with pytest.raises(RecordError, match=r"rto_seconds must be a number, not string"):
        read_latest(str(tmp_path))
    with pytest.raises(RecordError, match=r"ok is missing"):
        DrillReport.from_dict({"backup_id": ID})


@settings(max_examples=100, deadline=None)
@given(JSON)
def test_arbitrary_json_is_never_a_traceback_for_run_records_and_reports(document):
    for cls in (RunRecord, DrillReport, FileEntry):
        try:
            cls.from_dict(document)
        except RecordError:
            pass
