# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: database_url_parts
short_description: Split a PostgreSQL URL into a password-free URL, its parts and a libpq passfile line
version_added: 0.1.0
author: Seawall Platform Team (@seawall)
description:
  - Parses C(postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME[?PARAMS]) the way the engine does.
  - Returns the URL without its password (for C(DATABASE_URL) in an environment file or C(databaseUrl) in
    the configuration), the password (decoded), and a passfile line C(host:port:*:user:password)
    with C(:) and C(\) escaped, matching every database of that server and user (verification restores
    and DR drills connect to other databases).
  - A URL without a host (a Unix socket) gets the passfile host C(localhost), which libpq matches for
    connections through the default socket directory.
  - Mark tasks that use the result C(no_log), it holds the password.
options:
  _input:
    description: The database URL.
    type: string
    required: true
  password:
    description: A password that replaces the URL's own (for example from a vault); empty keeps the URL's.
    type: string
    default: ''
"""

EXAMPLES = r"""
- name: The passfile of the backup user
  ansible.builtin.copy:
    dest: /etc/seawall-pgbackup/pgpass
    mode: "0600"
    content: "{{ (pgbackup_database_url | seawall.pgbackup.database_url_parts).pgpass }}\n"
  no_log: true
"""

RETURN = r"""
_value:
  description: The parts of the URL.
  type: dict
  contains:
    url:
      description: The URL without its password.
      type: string
    user:
      description: The user name (decoded); empty when the URL has none.
      type: string
    password:
      description: The password (decoded, or O(password)); empty when there is none.
      type: string
    host:
      description: The host name; empty for a Unix socket.
      type: string
    port:
      description: The port (5432 when the URL has none).
      type: integer
    dbname:
      description: The database name (decoded); empty when the URL has none.
      type: string
    pgpass:
      description: The passfile line, empty when there is no password.
      type: string
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.config.connection import (escape_passfile,
                                                                                                  redact_url,
                                                                                                  url_parts)
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.core.errors import ConfigError


def database_url_parts(url, password=''):
    """The password-free URL, the parts and the passfile line of a PostgreSQL URL."""
    if not isinstance(url, str) or not url.strip():
        raise AnsibleFilterError('database_url_parts: expected a postgresql://user@host:port/dbname URL')
    text = url.strip()
    try:
        parts = url_parts(text)  # the engine's parser: a password may hold # ? @ : / (encoded) or spaces
    except ConfigError as exc:
        # Never echo the URL: it may hold a password (the engine's message does not).
        raise AnsibleFilterError('database_url_parts: %s' % exc) from None
    if any(c in text for c in "\n\r'\"\\"):
        raise AnsibleFilterError('database_url_parts: the database URL must not contain quotes, backslashes or newlines')
    secret = password if password not in (None, '') else (parts['password'] or '')
    user = parts['user']
    host = parts['host']
    port = parts['port']
    pgpass = ''
    if secret:
        if not user:
            raise AnsibleFilterError('database_url_parts: a password needs a user name in the URL')
        if '\n' in secret or '\r' in secret:
            raise AnsibleFilterError('database_url_parts: the password must not contain a newline')
        pgpass = ':'.join((escape_passfile(host or 'localhost'), str(port), '*', escape_passfile(user), escape_passfile(secret)))
    return {
        'url': redact_url(text),
        'user': user,
        'password': secret,
        'host': host,
        'port': port,
        'dbname': parts['dbname'],
        'pgpass': pgpass,
    }


class FilterModule(object):
    """seawall.pgbackup.database_url_parts"""

    def filters(self):
        return {'database_url_parts': database_url_parts}
