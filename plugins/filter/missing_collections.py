# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: missing_collections
short_description: The collections of a list that are not installed on the controller
version_added: 0.1.0
author: Seawall Platform Team (@seawall)
description:
  - Returns the names of the input list that Ansible cannot load on the controller, in the input's order, so a role
    can stop with one clear message (which collections, which requirements file) before a module is not found.
  - galaxy.yml requires only what the modules and the default roles need; the Windows scheduled tasks and the
    cloud set-up use collections the user installs for that use (C(requirements-windows.yml),
    C(requirements-cloud.yml)).
options:
  _input:
    description: Collection names, C(namespace.name).
    type: list
    elements: string
    required: true
"""

EXAMPLES = r"""
- name: Check the collections the Windows tasks use
  ansible.builtin.assert:
    that: missing | length == 0
    fail_msg: "install {{ missing | join(', ') }}: ansible-galaxy collection install -r requirements-windows.yml"
  vars:
    missing: "{{ ['ansible.windows', 'community.windows'] | seawall.pgbackup.missing_collections }}"
"""

RETURN = r"""
_value:
  description: The names that are not installed (empty when all are).
  type: list
  elements: string
"""

import importlib.util
import re

from ansible.errors import AnsibleFilterError

_NAME = re.compile(r'^[a-z0-9][a-z0-9_]*\.[a-z0-9][a-z0-9_]*$')


def missing_collections(names):
    if not isinstance(names, (list, tuple)):
        raise AnsibleFilterError('missing_collections: the input must be a list of collection names, got %s'
                                 % type(names).__name__)
    missing = []
    for name in names:
        if not isinstance(name, str) or not _NAME.match(name):
            raise AnsibleFilterError('missing_collections: %r is not a collection name (namespace.name)' % (name,))
        try:  # the controller's collection loader answers for ansible_collections.<namespace>.<name>
            found = importlib.util.find_spec('ansible_collections.%s' % name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


class FilterModule(object):
    """seawall.pgbackup.missing_collections"""

    def filters(self):
        return {'missing_collections': missing_collections}
