"""Smoke tests for tests/support: clusters start, the sample loads, and the comparison bites."""

from __future__ import annotations

import os
import stat

import pytest

from tests.support import load_sample
from tests.support.compare import (
    assert_same_database,
    normalize_dump,
    role_summary,
    schema_dump,
    sequence_values,
    table_checksums,
)
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.postgres


def test_cluster_basics(pg: PgCluster) -> None:
    assert pg.running
    assert pg.psql("SELECT current_setting('server_version_num')::int / 10000")[0][0] == str(pg.major)
    assert pg.psql("SHOW data_checksums") == [("on",)]
    assert pg.psql("SHOW server_encoding") == [("UTF8",)]
    assert pg.psql("SHOW password_encryption") == [("scram-sha-256",)]
    # NULL vs empty string, and embedded newlines/commas/quotes survive the round trip
    assert pg.psql("SELECT NULL::text, '', E'a\\nb,\"c\"'") == [(None, "", 'a\nb,"c"')]
    assert pg.url("x y", with_password=False) == f"postgresql://postgres@127.0.0.1:{pg.port}/x%20y"
    assert stat.S_IMODE(os.stat(pg.passfile).st_mode) == 0o600
    # scram over TCP: a wrong password is refused
    with pytest.raises(Exception):
        pg.psql("SELECT 1", password="wrong-password")


def test_both_majors(pg15: PgCluster, pg18: PgCluster) -> None:
    assert (pg15.major, pg18.major) == (15, 18)
    assert pg15.port != pg18.port


def test_sample_loads(sample_db) -> None:
    pg, db = sample_db.cluster, sample_db.name
    sums = table_checksums(pg, db)
    assert sums["public.chat_messages"][0] == 4000
    assert sum(sums[f"public.chat_messages_{p}"][0] for p in ("2024q1", "2024q2", "default")) == 4000
    assert sums['public."Schätze"'][0] == 3
    assert sums['public."Captain\'s ""Log"""'][0] == 3
    assert sequence_values(pg, db)["public.invoice_no_seq"] == (5003, True)
    roles = role_summary(pg, ["vtt_app", "vtt_readonly"])
    assert roles["vtt_app"]["member_of"] == "vtt_readonly"
    assert roles["vtt_app"]["settings"] == "statement_timeout=30s"
    assert pg.psql("SELECT count(*) FROM pg_largeobject_metadata", db) == [("7",)]
    exts = {r[0] for r in pg.psql("SELECT extname FROM pg_extension", db)}
    assert {"citext", "hstore"} <= exts


def test_same_database_passes_against_itself(sample_db) -> None:
    assert_same_database(sample_db.cluster, sample_db.name, sample_db.cluster, sample_db.name)


def test_two_loads_compare_equal(pg: PgCluster, sample_db) -> None:
    other = load_sample(pg, sample_db.name + "_b")
    try:
        assert_same_database(pg, sample_db.name, pg, other)
    finally:
        pg.drop_db(other)


def test_cross_version_loads_compare_equal(pg15: PgCluster, pg18: PgCluster) -> None:
    load_sample(pg15, "xv_sample")
    load_sample(pg18, "xv_sample")
    try:
        assert_same_database(pg15, "xv_sample", pg18, "xv_sample")
    finally:
        pg15.drop_db("xv_sample")
        pg18.drop_db("xv_sample")


def test_same_database_fails_after_changing_one_row(pg: PgCluster, sample_db) -> None:
    copy = sample_db.name + "_c"
    pg.psql(f'CREATE DATABASE "{copy}" TEMPLATE "{sample_db.name}"')
    try:
        assert_same_database(pg, sample_db.name, pg, copy)
        pg.psql("UPDATE public.chat_messages SET body = body || '!' WHERE message_id = 1234", copy)
        with pytest.raises(AssertionError, match=r"public\.chat_messages_2024q1: source \(1350"):
            assert_same_database(pg, sample_db.name, pg, copy)
    finally:
        pg.drop_db(copy)


@pytest.mark.parametrize(
    "change, expect",
    [
        ('DELETE FROM public."Schätze" WHERE id = 3', 'public."Schätze"'),
        ("SELECT lo_put(424299, 0, '\\x58'::bytea)", "large objects (oid -> md5) differ"),
        ("ALTER LARGE OBJECT 424201 OWNER TO vtt_app", "large object owners/ACLs differ"),
        ("SELECT setval('public.invoice_no_seq', 5010)", "sequences (last_value, is_called) differ"),
        ("COMMENT ON TABLE public.maps IS 'changed'", "schema dumps differ"),
        ("REVOKE SELECT ON public.maps FROM vtt_readonly", "schema dumps differ"),
        ("ALTER TABLE lore.factions ADD COLUMN extra int", "schema dumps differ"),
        ("GRANT CONNECT ON DATABASE {db} TO vtt_app",
         "database properties differ"),
    ],
    ids=["delete", "lo-content", "lo-owner", "sequence", "comment", "grant", "column", "db-acl"],
)
def test_same_database_detects_other_changes(pg18: PgCluster, change: str, expect: str) -> None:
    src = load_sample(pg18, "detect_src")
    copy = "detect_copy"
    pg18.psql(f'CREATE DATABASE "{copy}" TEMPLATE "{src}"')
    try:
        pg18.psql(change.format(db=f'"{copy}"'), copy)
        with pytest.raises(AssertionError) as err:
            assert_same_database(pg18, src, pg18, copy)
        assert expect in str(err.value)
    finally:
        pg18.drop_db(copy)
        pg18.drop_db(src)


def test_role_change_detected(pg15: PgCluster, pg18: PgCluster) -> None:
    load_sample(pg15, "role_src")
    load_sample(pg18, "role_dst")
    try:
        pg18.psql("ALTER ROLE vtt_app SET statement_timeout = '31s'")
        with pytest.raises(AssertionError, match="roles differ"):
            assert_same_database(pg15, "role_src", pg18, "role_dst")
    finally:
        pg18.psql("ALTER ROLE vtt_app SET statement_timeout = '30s'")
        pg15.drop_db("role_src")
        pg18.drop_db("role_dst")


def test_normalize_dump_strips_volatile_lines(pg18: PgCluster) -> None:
    pg18.create_db("norm_check")
    try:
        raw = schema_dump(pg18, "norm_check", normalize=False)
        clean = normalize_dump(raw)
        assert "\\restrict" in raw  # pg_dump 18.x emits a random key per dump
        assert "\\restrict" not in clean and "\\unrestrict" not in clean
        assert "Dumped by pg_dump version" not in clean
        assert schema_dump(pg18, "norm_check") == schema_dump(pg18, "norm_check")
    finally:
        pg18.drop_db("norm_check")
