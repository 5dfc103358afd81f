"""Database URLs: passwords go to a private passfile, never to argv or output."""

from __future__ import annotations

import os
import stat
from urllib.parse import quote

import pytest

from seawall_pgbackup.config.connection import DbTarget, redact_url
from seawall_pgbackup.core.errors import ConfigError


def test_password_moves_to_a_private_passfile():
    target = DbTarget("postgresql://app:p%40ss%3Aw0rd@db:5433/high%20seas?sslmode=require")
    assert target.url == "postgresql://app@db:5433/high%20seas?sslmode=require"
    assert target.dbname == "high seas"
    env = target.env({})
    path = env["PGPASSFILE"]
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with open(path, encoding="utf-8") as handle:
            assert handle.read() == "*:*:*:*:p@ss\\:w0rd\n"
    finally:
        target.close()
    assert not os.path.exists(path)


def test_url_without_password_keeps_the_callers_passfile():
    env = DbTarget("postgresql://app@db/x").env({"PGPASSFILE": "/home/app/.pgpass"})
    assert env["PGPASSFILE"] == "/home/app/.pgpass"


def test_for_database_keeps_credentials_and_quotes_the_name():
    target = DbTarget("postgresql://app:pw@db:5432/source")
    other = target.for_database('Schätze "x"')
    assert other.dbname == 'Schätze "x"'
    assert other.url == "postgresql://app@db:5432/Sch%C3%A4tze%20%22x%22"
    assert "PGPASSFILE" in other.env({})
    other.close()


def test_redact_url():
    assert redact_url("postgres://u:secret@h/d") == "postgres://u@h/d"
    assert redact_url("postgresql://h/d") == "postgresql://h/d"
    assert redact_url("nonsense") == "<invalid database URL>"


PASSWORD = "p#s?s/w@r%d: x"  # every character urllib or a passfile treats specially


def test_any_password_character_parses_and_never_shows():
    encoded = quote(PASSWORD, safe="")
    for url in ("postgresql://app:%s@db:5433/app%%20db?sslmode=prefer" % encoded,   # as users encode it
                "postgresql://app:p#s?s@w%d: x@db:5433/app%20db?sslmode=prefer"):  # raw, as libpq takes it
        target = DbTarget(url)
        assert target.url == "postgresql://app@db:5433/app%20db?sslmode=prefer", url
        assert (target.user, target.dbname, target.hostinfo) == ("app", "app db", "db:5433")
        assert target._password == (PASSWORD if url.startswith("postgresql://app:p%") else "p#s?s@w%d: x")
        assert redact_url(url) == target.url
        assert target.for_database("other").url == "postgresql://app@db:5433/other?sslmode=prefer"


def test_an_ambiguous_url_is_refused_without_echoing_it():
    for url in ("postgresql://app:se/cret@db/app", "se:cret@db/app", "https://app:secret@db/app"):
        with pytest.raises(ConfigError) as refused:
            DbTarget(url)
        assert "cret" not in str(refused.value), str(refused.value)
        assert redact_url(url) == "<invalid database URL>"
    assert redact_url("postgresql://db/app?application_name=a@b") == "postgresql://db/app?application_name=a@b"
    assert redact_url("postgresql:///app?host=/run/postgresql") == "postgresql:///app?host=/run/postgresql"


@pytest.mark.parametrize("url, described", [
    ("postgresql://backup:s3cret@db1.example:5433/app", "server db1.example:5433, database app, user backup"),
    ("postgresql://backup@db1/app", "server db1:5432, database app, user backup"),
    ("postgresql:///app?host=/var/run/postgresql&port=5499",
     "server /var/run/postgresql:5499, database app, user (default)"),
    ("postgresql://[::1]:6000/x?user=bob", "server ::1:6000, database x, user bob"),
])
def test_messages_name_the_server_never_the_password_or_the_url_as_written(url, described):
    """An Ansible module's no_log masks the URL as written wherever it appears: "cannot connect to ********" said
    nothing. The server, database and user do not equal that value, and the password is never among them."""
    assert DbTarget(url).describe() == described
    assert "s3cret" not in DbTarget(url).describe() and url not in DbTarget(url).describe()
