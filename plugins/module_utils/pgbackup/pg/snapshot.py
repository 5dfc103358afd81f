# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One snapshot shared by pg_dump and our own row counts.

A psql session exports a snapshot and pg_dump imports it (``--snapshot``), so the row counts
recorded in the manifest describe exactly the rows in the dump, even while the database is
being written. A restore-level verification later compares the restored counts with them.
"""

from __future__ import annotations

import json
import threading
from typing import Dict, List, Optional

from ..config.connection import DbTarget
from ..core.errors import BackupError
from .client import explain_libpq_error, query, quote_ident, quote_literal
from .runner import PIPE, TimeoutExpired, ToolProcess

# Every ordinary table a dump holds (extension members are not dumped), and the database size.
TABLES_SQL = (
    "SELECT json_build_object('size', pg_database_size(current_database()), 'tables', "
    "coalesce(json_agg(json_build_array(n.nspname, c.relname)), '[]'))"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND n.nspname NOT LIKE 'pg_toast%' AND NOT EXISTS (SELECT 1 FROM pg_depend d"
    " WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')")


def row_counts_sql(tables: List[List[str]]) -> str:
    """One statement counting every table exactly, keyed like ``format('%I.%I')``.

    Built here rather than with dynamic SQL on the server: that needs XML support or a
    function, and neither is available on every build or in a read-only transaction.
    """
    parts = ["SELECT format('%%I.%%I', %s, %s) AS t, count(*) AS n FROM ONLY %s.%s"
             % (quote_literal(schema), quote_literal(name), quote_ident(schema), quote_ident(name))
             for schema, name in tables]
    return "SELECT coalesce(json_object_agg(t, n), '{}') FROM (%s) counts" % " UNION ALL ".join(parts)


class SnapshotSession:
    """A read-only repeatable-read transaction kept open while pg_dump runs."""

    def __init__(self, psql: str, target: DbTarget) -> None:
        self.target = target
        self._tool = ToolProcess([psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "--no-password",
                                  "-d", target.url], "psql", target, stdin=PIPE, stdout=PIPE)
        self._proc = self._tool.proc
        self._counts: Optional[Dict[str, object]] = None
        self._failure: Optional[BackupError] = None
        self._thread: Optional[threading.Thread] = None

    def _ask(self, sql: str) -> str:
        try:
            self._proc.stdin.write(sql.encode("utf-8") + b";\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass
        line = self._proc.stdout.readline()
        if not line:
            self._tool.wait()  # stdout closed: psql is exiting
            raise BackupError(explain_libpq_error(self._tool.stderr(), self.target), step="snapshot")
        return line.decode("utf-8").strip()

    def export(self) -> str:
        # BEGIN prints nothing under -q; the snapshot id is the first line psql writes.
        return self._ask("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_export_snapshot()")

    def count_rows_in_background(self) -> None:
        def work() -> None:
            try:
                found = json.loads(self._ask(TABLES_SQL))
                rows = json.loads(self._ask(row_counts_sql(found["tables"]))) if found["tables"] else {}
                self._counts = {"size": found["size"], "rows": rows}
            except BackupError as exc:
                self._failure = exc

        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()

    def finish(self) -> Dict[str, object]:
        """Wait for the counts, end the transaction; {'size': bytes, 'rows': {table: n}}."""
        if self._thread is not None:
            self._thread.join()
        self.close()
        if self._failure is not None:
            raise self._failure
        return self._counts or {}

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write(b"COMMIT;\n")
                self._proc.stdin.close()
            except (BrokenPipeError, ValueError):
                pass
            try:
                self._tool.wait(timeout=30)
            except TimeoutExpired:
                pass  # killed and reaped by wait
        self._tool.close()


def count_rows(psql: str, target: DbTarget, tables: Optional[List[List[str]]] = None) -> Dict[str, int]:
    """Exact row counts now (of ``tables``, or of every table the database holds)."""
    if tables is None:
        tables = json.loads(query(psql, target, TABLES_SQL)[0][0])["tables"]
    if not tables:
        return {}
    return json.loads(query(psql, target, row_counts_sql(tables))[0][0])


def snapshot_flag(snapshot: Optional[str]) -> List[str]:
    return ["--snapshot=" + snapshot] if snapshot else []
