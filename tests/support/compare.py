"""Compare two PostgreSQL databases (possibly in different clusters/majors).

Every helper queries through the cluster's psql as the superuser with a pinned
session (UTC, ISO dates, hex bytea) so textual row forms are stable.
:func:`assert_same_database` combines them and raises ``AssertionError`` with a
readable diff on the first kind of difference found (it collects all kinds).
"""

from __future__ import annotations

import difflib
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from .pgcluster import PgCluster, quote_literal

__all__ = [
    "schema_dump",
    "normalize_dump",
    "table_checksums",
    "large_objects",
    "large_object_meta",
    "sequence_values",
    "role_summary",
    "relevant_roles",
    "database_properties",
    "assert_same_database",
    "newest_client",
]

# Pin everything that changes the text form of values.
_SESSION = """\
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SET bytea_output = 'hex';
SET extra_float_digits = 1;
SET search_path = pg_catalog;
"""

_USER_NS = """\
n.nspname NOT IN ('pg_catalog', 'information_schema')
AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
"""

_NOT_EXT_MEMBER = """\
NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
            AND d.objid = c.oid AND d.deptype = 'e')
"""


def newest_client(*clusters: PgCluster) -> PgCluster:
    """The cluster whose client binaries have the highest major (pg_dump N dumps servers <= N)."""
    return max(clusters, key=lambda c: c.major)


# ---------------------------------------------------------------- schema

_VOLATILE_LINE = re.compile(
    r"""^(?:
        \\restrict\s.*            # pg_dump >= 17.6 / 18: random per-dump key
      | \\unrestrict\s.*
      | SET\s.*                   # session settings differ between versions
      | SELECT\ pg_catalog\.set_config\('search_path'.*
      | --\ Dumped\ (?:from|by)\ .*
      | --\ Started\ on\ .*
      | --\ Completed\ on\ .*
      | --\ PostgreSQL\ database\ dump.*
    )$""",
    re.X,
)


_NAMED_NOT_NULL = re.compile(r'CONSTRAINT "(?:[^"]|"")*" NOT NULL')
_QUALIFIER = re.compile(r'"(?:[^"]|"")*"\.')


def normalize_dump(text: str, *, cross_version: bool = False) -> str:
    """Drop volatile lines (\\restrict keys, SET, version comments) and collapse blank lines.

    With *cross_version* (dumps of servers of different majors, made with one pg_dump) also
    erase known deparse differences, lossily: named NOT NULL constraints (PG18 catalogs them)
    become plain ``NOT NULL`` and all ``"qualifier".`` prefixes inside view bodies are dropped
    (PG16+ no longer table-qualifies columns of single-table views).
    """
    out: list[str] = []
    in_view = False
    for line in text.splitlines():
        if _VOLATILE_LINE.match(line):
            continue
        if cross_version:
            line = _NAMED_NOT_NULL.sub("NOT NULL", line)
            if line.startswith(("CREATE VIEW ", "CREATE MATERIALIZED VIEW ")):
                in_view = True
            elif in_view:
                line = _QUALIFIER.sub("", line)
            if in_view and line.rstrip().endswith(";"):
                in_view = False
        if not line.strip():
            if out and out[-1] == "":
                continue
            line = ""
        out.append(line.rstrip())
    while out and out[0] == "":
        out.pop(0)
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def schema_dump(
    cluster: PgCluster, db: str, *, client: PgCluster | None = None, normalize: bool = True,
    cross_version: bool = False,
) -> str:
    """``pg_dump --schema-only --quote-all-identifiers`` of *db* (owners, ACLs kept), normalized; *client* picks pg_dump."""
    p = cluster.run("pg_dump", "--schema-only", "--quote-all-identifiers", db=db, client=client)
    return normalize_dump(p.stdout, cross_version=cross_version) if normalize else p.stdout


# ---------------------------------------------------------------- data


def _user_tables(cluster: PgCluster, db: str) -> list[tuple[str, str]]:
    rows = cluster.psql(
        _SESSION
        + f"""
SELECT c.oid::regclass::text, c.relkind::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND {_USER_NS} AND {_NOT_EXT_MEMBER}
  AND (c.relkind <> 'm' OR c.relispopulated)
ORDER BY 1;
""",
        db,
    )
    return [(r[0] or "", r[1] or "") for r in rows]


def table_checksums(cluster: PgCluster, db: str) -> dict[str, tuple[int, str]]:
    """{qualified table: (row count, md5 of rows sorted by text form)} for tables, partitions, partitioned parents, populated matviews."""
    tables = _user_tables(cluster, db)
    if not tables:
        return {}
    parts = []
    for name, kind in tables:
        only = "ONLY " if kind == "r" else ""
        parts.append(
            f"SELECT {quote_literal(name)}, count(*), "
            f"md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text COLLATE \"C\"), '')) "
            f"FROM {only}{name} AS t;"
        )
    rows = cluster.psql(_SESSION + "\n".join(parts), db)
    return {r[0] or "": (int(r[1] or 0), r[2] or "") for r in rows}


def large_objects(cluster: PgCluster, db: str) -> dict[int, str]:
    """{large object oid: md5 of its content}."""
    rows = cluster.psql(
        "SELECT oid, md5(lo_get(oid)) FROM pg_catalog.pg_largeobject_metadata ORDER BY oid", db
    )
    return {int(r[0] or 0): r[1] or "" for r in rows}


def large_object_meta(cluster: PgCluster, db: str) -> dict[int, tuple[str, str, str]]:
    """{large object oid: (owner, sorted ACL, comment)} (pg_dump --schema-only omits these)."""
    rows = cluster.psql(
        """SELECT oid, pg_get_userbyid(lomowner),
                  coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(lomacl) a), ''),
                  coalesce(obj_description(oid, 'pg_largeobject'), '')
           FROM pg_catalog.pg_largeobject_metadata ORDER BY oid""",
        db,
    )
    return {int(r[0] or 0): (r[1] or "", r[2] or "", r[3] or "") for r in rows}


def sequence_values(cluster: PgCluster, db: str) -> dict[str, tuple[int, bool]]:
    """{qualified sequence: (last_value, is_called)} for every user sequence (incl. identity/serial)."""
    seqs = cluster.psql(
        _SESSION
        + f"""
SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND {_USER_NS} AND {_NOT_EXT_MEMBER} ORDER BY 1;
""",
        db,
    )
    if not seqs:
        return {}
    sql = "\n".join(
        f"SELECT {quote_literal(s[0] or '')}, last_value, is_called FROM {s[0]};" for s in seqs
    )
    rows = cluster.psql(_SESSION + sql, db)
    return {r[0] or "": (int(r[1] or 0), r[2] == "t") for r in rows}


# ---------------------------------------------------------------- roles and database


def relevant_roles(cluster: PgCluster, db: str) -> set[str]:
    """Roles a database depends on (owners/grantees via pg_shdepend, its owner, role settings) plus their membership closure."""
    rows = cluster.psql(
        """
WITH d AS (SELECT oid FROM pg_database WHERE datname = current_database())
SELECT r.rolname FROM pg_shdepend s JOIN pg_roles r ON r.oid = s.refobjid, d
 WHERE s.refclassid = 'pg_authid'::regclass AND (s.dbid = d.oid
       OR (s.dbid = 0 AND s.classid = 'pg_database'::regclass AND s.objid = d.oid))
UNION
SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()
UNION
SELECT r.rolname FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole, d
 WHERE s.setdatabase = d.oid;
""",
        db,
    )
    names = {r[0] or "" for r in rows}
    edges = cluster.psql(
        "SELECT pg_get_userbyid(roleid), pg_get_userbyid(member) FROM pg_auth_members", db
    )
    changed = True
    while changed:
        changed = False
        for role, member in edges:
            if (role in names) != (member in names):
                names.update({role or "", member or ""})
                changed = True
    return {n for n in names if n and n != cluster.superuser and not n.startswith("pg_")}


def role_summary(cluster: PgCluster, roles: Iterable[str] | None = None) -> dict[str, dict[str, object]]:
    """{role: attributes, has_password, member_of [(role, admin)], settings, comment}; excludes the bootstrap superuser and pg_* roles."""
    rows = cluster.psql(
        r"""
SELECT r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin,
       r.rolreplication, r.rolbypassrls, r.rolconnlimit, coalesce(r.rolvaliduntil::text, ''),
       a.rolpassword IS NOT NULL,
       coalesce((SELECT string_agg(x, ', ' ORDER BY x) FROM (
                     SELECT DISTINCT pg_get_userbyid(m.roleid)
                            || CASE WHEN m.admin_option THEN ' (admin)' ELSE '' END AS x
                     FROM pg_auth_members m WHERE m.member = r.oid) mm), ''),
       coalesce((SELECT string_agg(c, ', ' ORDER BY c)
                 FROM pg_db_role_setting s, unnest(s.setconfig) c
                 WHERE s.setrole = r.oid AND s.setdatabase = 0), ''),
       coalesce(shobj_description(r.oid, 'pg_authid'), '')
FROM pg_roles r JOIN pg_authid a ON a.oid = r.oid
WHERE r.rolname !~ '^pg_' AND r.oid <> 10
ORDER BY r.rolname;
"""
    )
    keys = ["superuser", "inherit", "createrole", "createdb", "login", "replication", "bypassrls",
            "connlimit", "validuntil", "has_password", "member_of", "settings", "comment"]
    wanted = set(roles) if roles is not None else None
    out: dict[str, dict[str, object]] = {}
    for r in rows:
        name = r[0] or ""
        if wanted is not None and name not in wanted:
            continue
        out[name] = dict(zip(keys, r[1:]))
    return out


def database_properties(cluster: PgCluster, db: str) -> dict[str, object]:
    """Database-level state: owner, encoding, collation, connlimit, ACL, settings and per-role settings (db-name independent)."""
    rows = cluster.psql(
        """
SELECT pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datcollate, d.datctype,
       d.datconnlimit, d.datallowconn,
       coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(d.datacl) a), '<default>'),
       coalesce((SELECT string_agg(x, '; ' ORDER BY x) FROM (
                     SELECT CASE WHEN s.setrole = 0 THEN '*' ELSE pg_get_userbyid(s.setrole) END || ': ' || c AS x
                     FROM pg_db_role_setting s, unnest(s.setconfig) c WHERE s.setdatabase = d.oid
                       AND c NOT LIKE 'seawall.%') ss), ''),  -- seawall's own restore record
       coalesce(shobj_description(d.oid, 'pg_database'), '')
FROM pg_database d WHERE d.datname = current_database();
""",
        db,
    )
    keys = ["owner", "encoding", "collate", "ctype", "connlimit", "allowconn", "acl", "settings", "comment"]
    return dict(zip(keys, rows[0]))


# ---------------------------------------------------------------- assertion


def _dict_diff(title: str, a: dict, b: dict, limit: int = 40) -> list[str]:
    lines: list[str] = []
    for k in sorted(set(a) | set(b), key=str):
        if k not in b:
            lines.append(f"  - {k!s}: only in source: {a[k]!r}")
        elif k not in a:
            lines.append(f"  + {k!s}: only in destination: {b[k]!r}")
        elif a[k] != b[k]:
            lines.append(f"  ~ {k!s}: source {a[k]!r} != destination {b[k]!r}")
    if not lines:
        return []
    more = len(lines) - limit
    lines = lines[:limit] + ([f"  ... and {more} more"] if more > 0 else [])
    return [f"{title} differ:", *lines]


def assert_same_database(
    src_cluster: PgCluster, src_db: str, dst_cluster: PgCluster, dst_db: str, *,
    check_schema: bool = True, check_data: bool = True, check_large_objects: bool = True,
    check_sequences: bool = True, check_roles: bool | Iterable[str] = True,
    check_database: bool = True,
) -> None:
    """Raise AssertionError (with diffs) unless schema, data, large objects, sequences, roles and database properties match."""
    problems: list[str] = []
    where = f"{src_cluster.name}/{src_db} vs {dst_cluster.name}/{dst_db}"
    client = newest_client(src_cluster, dst_cluster)
    xv = src_cluster.major != dst_cluster.major
    role_names = None
    if check_roles is not False:
        role_names = relevant_roles(src_cluster, src_db) if check_roles is True else set(check_roles)

    def collect(cluster: PgCluster, db: str) -> dict[str, object]:
        got: dict[str, object] = {}
        if check_schema:
            got["schema"] = schema_dump(cluster, db, client=client, cross_version=xv)
        if check_data:
            got["table (rows, md5)"] = table_checksums(cluster, db)
        if check_large_objects:
            got["large objects (oid -> md5)"] = large_objects(cluster, db)
            got["large object owners/ACLs"] = large_object_meta(cluster, db)
        if check_sequences:
            got["sequences (last_value, is_called)"] = sequence_values(cluster, db)
        if role_names is not None:
            got["roles"] = role_summary(cluster, role_names)
        if check_database:
            got["database properties"] = database_properties(cluster, db)
        return got

    # Both sides are subprocess-bound: collect them concurrently.
    with ThreadPoolExecutor(max_workers=2) as pool:
        fa = pool.submit(collect, src_cluster, src_db)
        fb = pool.submit(collect, dst_cluster, dst_db)
        got_a, got_b = fa.result(), fb.result()

    for key, va in got_a.items():
        vb = got_b[key]
        if key == "schema":
            if va != vb:
                assert isinstance(va, str) and isinstance(vb, str)
                diff = list(difflib.unified_diff(va.splitlines(), vb.splitlines(),
                                                 f"source {src_cluster.name}/{src_db}",
                                                 f"destination {dst_cluster.name}/{dst_db}", n=2, lineterm=""))
                if len(diff) > 200:
                    diff = diff[:200] + [f"... ({len(diff) - 200} more diff lines)"]
                problems.append("schema dumps differ:\n" + "\n".join(diff))
        else:
            problems += _dict_diff(key, va, vb)  # type: ignore[arg-type]
    if problems:
        raise AssertionError(f"databases differ ({where}):\n" + "\n".join(problems))
