# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Data-only restore: pg_restore writes SQL, psql replays it into the existing schema in one transaction.

Materialized views are refreshed in the same transaction; with ``clean`` each table is emptied right
before it is filled, so a failure anywhere changes nothing.
"""

from __future__ import annotations

import re
import threading
from typing import IO, Any, Dict, List, Tuple

from ...codec.stored import open_stored
from ...config.connection import DbTarget
from ...config.settings import Config
from ...core.errors import RestoreError
from ...model.manifest import Backup
from ..client import query
from ..runner import PIPE, ToolProcess

# A full restore fills materialized views with REFRESH (pg_dump stores no rows for them); a data-only
# restore does the same, in the same transaction, in creation order so dependent views see their sources.
REFRESH_MATVIEWS = b"""
DO $seawall$ DECLARE view regclass; BEGIN
  FOR view IN SELECT c.oid::regclass FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind = 'm' AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY c.oid
  LOOP EXECUTE 'REFRESH MATERIALIZED VIEW ' || view::text; END LOOP;
END $seawall$;
"""
_COPY_LINE = re.compile(r"^COPY (.+?) \(.*\) FROM stdin;$")
_LO_CREATE = re.compile(r"^SELECT pg_catalog\.lo_create\('(\d+)'\);$")


def count_tables(psql: str, target: DbTarget) -> int:
    return int(query(psql, target, (
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN "
        "('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"))[0][0])


def restore_data(psql: str, pg_restore_path: str, target: DbTarget, backup: Backup, entry: Dict[str, Any],
                 cfg: Config, clean: bool) -> Tuple[int, List[str]]:
    """Replay the archive's rows into ``target``; (tables in the target, warnings)."""
    tables = count_tables(psql, target)
    if tables == 0:
        raise RestoreError("target database %s has no tables: restore a schema backup into it first" % target.dbname)
    path = backup.file_path(entry)
    warnings: List[str] = []
    with ToolProcess([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "--no-password",
                      "-d", target.url, "-f", "-"], "psql", target, stdin=PIPE) as loader, \
            ToolProcess([pg_restore_path, "--data-only", "--file=-"], "pg_restore", target, stdin=PIPE,
                        stdout=PIPE) as producer:
        failure: List[BaseException] = []

        def pump() -> None:
            try:
                with open_stored(backup, entry, cfg) as src:
                    producer.feed(src, path, RestoreError)
            except BaseException as exc:  # pylint: disable=broad-except
                failure.append(exc)

        feeder = threading.Thread(target=pump, daemon=True)
        feeder.start()
        try:
            copy_sql(producer.stdout, loader.stdin, clean)
        finally:
            producer.stdout.close()
            feeder.join()
        if failure:
            loader.kill()
            raise failure[0]
        try:
            warnings.extend(loader.finish("restore", RestoreError))
        except RestoreError as exc:
            producer.kill()  # it only failed because psql stopped reading
            raise RestoreError("%s; nothing was changed (the data restore is one transaction)" % exc,
                               hint=None if clean else "replace-rows") from None
        warnings.extend(producer.finish("restore", RestoreError))
    return tables, warnings


def copy_sql(source: IO[bytes], sink: IO[bytes], clean: bool) -> None:
    """Stream pg_restore's SQL into psql; with ``clean``, empty each table right before it is filled."""
    in_copy = False
    try:
        for line in source:
            if clean and not in_copy:
                text = line.decode("utf-8", "replace").rstrip("\n")
                match = _COPY_LINE.match(text)
                if match:
                    sink.write(("TRUNCATE %s CASCADE;\n" % match.group(1)).encode("utf-8"))
                match = _LO_CREATE.match(text)
                if match:
                    sink.write(("SELECT pg_catalog.lo_unlink(oid) FROM pg_catalog.pg_largeobject_metadata "
                                "WHERE oid = %s;\n" % match.group(1)).encode("ascii"))
            if line.startswith(b"COPY ") and line.rstrip().endswith(b"FROM stdin;"):
                in_copy = True
            elif in_copy and line in (b"\\.\n", b"\\.\r\n"):
                in_copy = False
            sink.write(line)
        sink.write(REFRESH_MATVIEWS)
    except BrokenPipeError:
        pass
    finally:
        try:
            sink.close()
        except BrokenPipeError:
            pass
