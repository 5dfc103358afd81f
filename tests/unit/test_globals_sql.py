"""Replaying globals never alters existing roles or the connecting role."""

from __future__ import annotations

from seawall_pgbackup.pg.globals_sql import filter_globals, leading_identifier

DUMP = '''--
-- PostgreSQL database cluster dump
--
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS PASSWORD 'SCRAM-x';
CREATE ROLE vtt_app;
ALTER ROLE vtt_app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD 'SCRAM-y';
CREATE ROLE "Captain ""Flint""";
ALTER ROLE "Captain ""Flint""" WITH NOLOGIN;
CREATE ROLE ops;
ALTER ROLE ops WITH LOGIN PASSWORD 'SCRAM-z';
ALTER ROLE vtt_app SET statement_timeout TO '30s';
ALTER ROLE ops SET work_mem TO '64MB';
GRANT vtt_readonly TO vtt_app WITH INHERIT TRUE GRANTED BY postgres;
GRANT vtt_readonly TO ops GRANTED BY postgres;
GRANT CREATE ON TABLESPACE fast TO vtt_app;
CREATE TABLESPACE fast OWNER postgres LOCATION '/srv/fast';
CREATE TABLESPACE slow OWNER postgres LOCATION '/srv/slow';
'''


def test_leading_identifier():
    assert leading_identifier('"Captain ""Flint""" WITH') == ('Captain "Flint"', " WITH")
    assert leading_identifier("vtt_app;") == ("vtt_app", ";")


def test_existing_and_connecting_roles_are_left_alone():
    lines = DUMP.splitlines(keepends=True)
    kept = "".join(filter_globals(lines, existing_roles={"ops"}, current_user="postgres", existing_tablespaces={"fast"}))
    assert "ALTER ROLE postgres" not in kept and "CREATE ROLE postgres" not in kept
    assert "ops" not in kept.replace("GRANT CREATE ON TABLESPACE", "")  # existing role: not created, altered or granted
    assert "CREATE ROLE vtt_app;" in kept and "PASSWORD 'SCRAM-y'" in kept
    assert "ALTER ROLE vtt_app SET statement_timeout TO '30s';" in kept
    assert 'CREATE ROLE "Captain ""Flint""";' in kept
    assert "GRANT vtt_readonly TO vtt_app WITH INHERIT TRUE;\n" in kept  # grantor dropped
    assert "GRANT CREATE ON TABLESPACE fast TO vtt_app;" in kept
    assert "CREATE TABLESPACE fast" not in kept and "CREATE TABLESPACE slow" in kept
    assert kept.startswith("--\n-- PostgreSQL database cluster dump")
