# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Partial restore: every definition (so types, extensions and schemas are there), rows of the chosen tables only."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ...config.connection import DbTarget
from ...config.settings import Config
from ...core.errors import RestoreError
from ...model.manifest import Backup
from ..client import qualified as format_table
from ..client import query, quote_literal
from ..globals_sql import leading_identifier
from ..snapshot import count_rows
from .archive import pg_restore, unpacked_archive


def split_table_name(name: str) -> Tuple[str, str]:
    """``schema.table`` (``public`` when no schema is given); quote names that contain dots: ``"a.b".c``."""
    if name.startswith('"'):
        first, rest = leading_identifier(name)
        if rest.startswith("."):
            second = leading_identifier(rest[1:])[0]
            return first or "", second or ""
        return "public", first or ""
    if "." in name:
        schema, table = name.split(".", 1)
        return schema, leading_identifier(table)[0] or table
    return "public", name


def leaf_tables(psql: str, staged: DbTarget, tables: Sequence[Tuple[str, str]],
                schemas: Sequence[str]) -> List[Tuple[str, str]]:
    """The tables that hold the rows of the chosen ones (a partitioned table's rows live in its leaves)."""
    found: List[Tuple[str, str]] = []
    for schema, table in tables:
        name = quote_literal(format_table(schema, table))
        rows = query(psql, staged, (
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND (c.oid = to_regclass(%s) OR c.oid IN (SELECT relid FROM "
            "pg_partition_tree(to_regclass(%s)) WHERE isleaf))" % (name, name)))
        if not rows:
            raise RestoreError("table %s.%s is not in the backup" % (schema, table))
        found.extend((row[0], row[1]) for row in rows)
    for schema in schemas:
        rows = query(psql, staged, (
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND n.nspname = %s" % quote_literal(schema)))
        if not query(psql, staged, "SELECT 1 FROM pg_namespace WHERE nspname = %s" % quote_literal(schema)):
            raise RestoreError("schema %s is not in the backup" % schema)
        found.extend((row[0], row[1]) for row in rows)
    return sorted(set(found))


def check_partial_rows(psql: str, staged: DbTarget, recorded: Mapping[str, int],
                       leaves: Sequence[Tuple[str, str]]) -> Dict[str, int]:
    """Every table a partial restore filled holds exactly the rows the backup recorded (``recorded``)."""
    counts = count_rows(psql, staged, [list(t) for t in leaves])
    wrong = ["%s has %d rows, the backup recorded %d" % (k, v, recorded[k]) for k, v in sorted(counts.items())
             if k in recorded and recorded[k] != v]
    if wrong:
        raise RestoreError("partial restore is incomplete: " + "; ".join(wrong))
    return counts


def restore_partial(psql: str, pg_restore_path: str, staged: DbTarget, backup: Backup, entry: Dict[str, Any],
                    cfg: Config, jobs: int, tables: Sequence[Tuple[str, str]], schemas: Sequence[str],
                    recorded_rows: Mapping[str, int], failures: Optional[List[str]] = None) -> Dict[str, int]:
    """Definitions, then the leaf tables' rows; the restored row counts, checked against ``recorded_rows``.

    ``failures`` given (keep going): objects pg_restore cannot restore are added to it instead of raising.
    """
    with unpacked_archive(backup, entry, cfg) as plain:
        pg_restore(pg_restore_path, staged, backup, entry, cfg, [["--section=pre-data"]], jobs, plain, failures)
        leaves = leaf_tables(psql, staged, tables, schemas)
        pg_restore(pg_restore_path, staged, backup, entry, cfg,
                   [["--data-only", "--schema=" + schema, "--table=" + table] for schema, table in leaves], jobs, plain,
                   failures)
    return check_partial_rows(psql, staged, recorded_rows, leaves)
