# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Replay pg_dumpall --globals-only output onto another cluster without harming it.

Roles that already exist there are kept as they are (no ALTER, no password change) and the
connecting role is never touched, so rebuilding on a fresh cluster cannot lock anyone out.
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator, Optional, Set, Tuple

_ROLE_STATEMENT = re.compile(r"^(CREATE ROLE|ALTER ROLE|COMMENT ON ROLE|ALTER USER)\s+(.*)$")
_TABLESPACE = re.compile(r"^CREATE TABLESPACE\s+(.*)$")
_GRANTED_BY = re.compile(r"\s+GRANTED BY\s+(\"(?:[^\"]|\"\")+\"|[^\s;]+)(?=\s*;)")


def leading_identifier(text: str) -> Tuple[Optional[str], str]:
    """Split ``"we""ird" WITH ...`` into (``we"ird``, ``WITH ...``); unquoted names are as written."""
    text = text.lstrip()
    if text.startswith('"'):
        i = 1
        name = []
        while i < len(text):
            if text[i] == '"':
                if i + 1 < len(text) and text[i + 1] == '"':
                    name.append('"')
                    i += 2
                    continue
                return "".join(name), text[i + 1:]
            name.append(text[i])
            i += 1
        return None, text
    match = re.match(r"([^\s;]+)(.*)$", text, re.S)
    if not match:
        return None, text
    return match.group(1), match.group(2)


def filter_globals(lines: Iterable[str], existing_roles: Set[str], current_user: str,
                   existing_tablespaces: Set[str]) -> Iterator[str]:
    """Yield the statements to run on the target cluster."""
    protected = set(existing_roles) | {current_user}
    for line in lines:
        role = _ROLE_STATEMENT.match(line)
        if role:
            name = leading_identifier(role.group(2))[0]
            if name in protected:
                continue
        space = _TABLESPACE.match(line)
        if space:
            name = leading_identifier(space.group(1))[0]
            if name in existing_tablespaces:
                continue
        if line.startswith("GRANT "):
            member = _membership_member(line)
            if member is not None:
                if member in protected:
                    continue
                # The original grantor may not exist here; the restoring role grants instead.
                line = _GRANTED_BY.sub("", line)
        yield line


def _membership_member(line: str) -> Optional[str]:
    """The member of ``GRANT role TO member ...``; None for privilege grants (``GRANT ... ON ...``)."""
    granted, rest = leading_identifier(line[len("GRANT "):])
    if granted is None or not rest.lstrip().startswith("TO "):
        return None
    return leading_identifier(rest.lstrip()[3:])[0]
