"""Which restore failures are the backup's own, and how pg_restore's failed objects are named (issue 11)."""

from __future__ import annotations

import os

import pytest

from seawall_pgbackup.core.errors import (BackupError, ConfigError, ConnectionFailed, LockedError, RestoreError,
                                          ResourceError)
from seawall_pgbackup.ops.verify import SCRATCH_PREFIX, scratch_name
from seawall_pgbackup.pg.restore.archive import describe_failures, failed_objects
from seawall_pgbackup.pg.restore.checks import environment_failure
from seawall_pgbackup.pg.restore.staging import STAGING_SUFFIX, aside_name, staging_name
from seawall_pgbackup.pg.restorer import refuse_partial_clean


@pytest.mark.parametrize("message, kind", [
    ('pg_restore failed (exit 1): ERROR:  extension "pgcrypto" is not available', ResourceError),
    ("pg_restore failed (exit 1): ERROR:  ICU is not supported in this build", ResourceError),
    ('ERROR:  could not create locale "xx_XX": No such file or directory', ResourceError),
    ('ERROR:  role "app_owner" does not exist', ResourceError),
    ("ERROR:  could not extend file \"base/1/2\": No space left on device", ResourceError),
    ("server closed the connection unexpectedly", ConnectionFailed),
    ('ERROR:  database "x" is being accessed by other users', LockedError),
    ("ERROR:  permission denied for schema public", ConfigError),
])
def test_environment_failures_are_not_the_backups(message, kind):
    found = environment_failure(RestoreError(message))
    assert type(found) is kind and message in str(found)  # pylint: disable=unidiomatic-typecheck


@pytest.mark.parametrize("message", [
    "pg_restore failed (exit 1): pg_restore: error: could not read from input file: end of file",
    'ERROR:  invalid input syntax for type integer: "x"',
    "pg_restore failed (exit 1): pg_restore: error: did not find magic string in file header",
])
def test_failures_of_the_backup_itself_stay_bad(message):
    assert environment_failure(BackupError(message)) is None


def test_failed_objects_are_counted_and_named():
    stderr = ('pg_restore: error: could not execute query: ERROR:  extension "pgcrypto" is not available\n'
              "Command was: CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;\n"
              "pg_restore: error: could not execute query: ERROR:  x\n"
              "Command was: CREATE TABLE public.items (\n    id integer\n);\n"
              "Command was: COPY public.items (id) FROM stdin;\n"
              "pg_restore: from TOC entry 215; 1259 16390 VIEW public v postgres\n"
              "pg_restore: warning: errors ignored on restore: 4\n")
    count, objects = failed_objects(stderr)
    assert count == 4
    assert objects == ["CREATE EXTENSION pgcrypto", "CREATE TABLE public.items", "COPY public.items", "VIEW public v"]
    assert describe_failures(count, objects) == ("4 objects failed: CREATE EXTENSION pgcrypto; CREATE TABLE "
                                                 "public.items; COPY public.items; VIEW public v")
    many = ["CREATE TABLE t%d" % n for n in range(25)]
    assert describe_failures(25, many).endswith("CREATE TABLE t19 and 5 more")


def test_scratch_names_are_unique_and_short():
    names = {scratch_name("full-" + "d" * 80 + "-20260101T000000Z") for _attempt in range(50)}
    assert len(names) == 50
    for name in names:
        assert name.startswith(SCRATCH_PREFIX) and len(name.encode()) <= 46
        assert "_%d_" % os.getpid() in name
        assert staging_name(name) == name + STAGING_SUFFIX  # the unique part survives the staging suffix


def test_aside_name_fits_and_partial_clean_is_refused():
    assert aside_name("t" * 80, "20260101T000000Z").endswith("__seawall_old_20260101T000000Z")
    assert len(aside_name("t" * 80, "20260101T000000Z")) == 63
    with pytest.raises(ConfigError) as caught:
        refuse_partial_clean(True, ["public.items"], [])
    assert caught.value.hint == "partial-aside"
    refuse_partial_clean(True, [], [])
    refuse_partial_clean(False, ["public.items"], [])
