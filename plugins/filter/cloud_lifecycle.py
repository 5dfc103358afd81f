# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: cloud_lifecycle
short_description: The lifecycle rules of a backup bucket or container, in the shape each provider's module takes
version_added: 0.1.0
author: Seawall Platform Team (@seawall)
description:
  - C(s3) returns a list of C(community.aws.s3_lifecycle) option dictionaries (one module call each, each with
    C(rule_id)) - a rule that moves objects to cheaper storage classes and expires them after O(expiration_days),
    expires noncurrent versions and aborts forgotten multipart uploads, and, with O(versioning), a rule that
    removes expired delete markers.
  - C(azure) returns the C(rules) of C(azure.azcollection.azure_rm_storageaccountmanagementpolicy) (block blobs
    under C(<container>/<prefix>)).
  - C(gcs) returns the C(lifecycle) of C(google.cloud.gcp_storage_bucket) (GCS rules apply to the whole bucket).
  - Transitions are checked (whole days, ascending, below the expiration, a storage class the provider knows).
options:
  _input:
    description: The provider, C(s3), C(azure) or C(gcs).
    type: string
    required: true
  expiration_days:
    description: Age in days at which objects are deleted; 0 for never.
    type: int
    default: 0
  transitions:
    description:
      - Moves to cheaper storage, each C({days, storage_class}). S3 classes such as C(STANDARD_IA), C(GLACIER_IR),
        C(GLACIER); GCS C(NEARLINE), C(COLDLINE), C(ARCHIVE); Azure only C(Archive) (the account's tier is the
        starting tier).
    type: list
    elements: dict
    default: []
  prefix:
    description: Key prefix of the backups (S3, Azure); empty for the whole bucket or container.
    type: string
    default: ''
  container:
    description: The Azure container (Azure rules filter on C(<container>/<prefix>)).
    type: string
    default: ''
  versioning:
    description: Whether the bucket keeps versions (adds the noncurrent-version and delete-marker rules).
    type: bool
    default: false
  noncurrent_days:
    description: Days after which a replaced or deleted version is removed; 0 for never.
    type: int
    default: 30
  abort_multipart_days:
    description: Days after which an unfinished multipart upload is aborted (S3); 0 for never.
    type: int
    default: 7
"""

EXAMPLES = r"""
- name: Apply the S3 lifecycle rules
  community.aws.s3_lifecycle: "{{ item | combine({'name': 'my-backups'}) }}"
  loop: "{{ 's3' | seawall.pgbackup.cloud_lifecycle(expiration_days=403, transitions=[{'days': 30, 'storage_class': 'STANDARD_IA'}]) }}"
"""

RETURN = r"""
_value:
  description: The rules (S3, Azure) or the lifecycle dictionary (GCS).
  type: raw
"""

from ansible.errors import AnsibleFilterError

STORAGE_CLASSES = {
    's3': ('STANDARD_IA', 'ONEZONE_IA', 'INTELLIGENT_TIERING', 'GLACIER_IR', 'GLACIER', 'DEEP_ARCHIVE'),
    'gcs': ('NEARLINE', 'COLDLINE', 'ARCHIVE'),
    'azure': ('Archive',),
}


def _days(name, value, minimum=0):
    if isinstance(value, bool):
        value = None
    try:
        days = int(value)
    except (TypeError, ValueError):
        days = None
    if days is None or days < minimum or str(days) != str(value).strip():
        raise AnsibleFilterError('cloud_lifecycle: %s=%r is not valid: use a whole number of days >= %d' % (name, value, minimum))
    return days


def _transitions(provider, transitions, expiration_days):
    if transitions is None:
        return []
    if not isinstance(transitions, list):
        raise AnsibleFilterError('cloud_lifecycle: transitions must be a list of {days, storage_class}')
    out = []
    for index, item in enumerate(transitions):
        where = 'transitions[%d]' % index
        if not isinstance(item, dict) or set(item) != {'days', 'storage_class'}:
            raise AnsibleFilterError('cloud_lifecycle: %s=%r is not valid: use {days: N, storage_class: NAME}' % (where, item))
        days = _days(where + '.days', item['days'], 1)
        known = STORAGE_CLASSES[provider]
        storage_class = next((c for c in known if c.lower() == str(item['storage_class']).lower()), None)
        if storage_class is None:
            raise AnsibleFilterError('cloud_lifecycle: %s.storage_class=%r is not valid for %s: use %s'
                                     % (where, item['storage_class'], provider, ', '.join(known)))
        if out and days <= out[-1][0]:
            raise AnsibleFilterError('cloud_lifecycle: %s.days=%d must be later than the transition before it (%d)'
                                     % (where, days, out[-1][0]))
        if expiration_days and days >= expiration_days:
            raise AnsibleFilterError('cloud_lifecycle: %s.days=%d must be before the expiration (%d days)'
                                     % (where, days, expiration_days))
        out.append((days, storage_class))
    return out


def _s3(prefix, expiration, transitions, versioning, noncurrent, abort):
    main = {'rule_id': 'seawall-pgbackup-expire', 'prefix': prefix, 'status': 'enabled'}
    if expiration:
        main['expiration_days'] = expiration
    if transitions:
        main['transitions'] = [{'transition_days': days, 'storage_class': cls} for days, cls in transitions]
    if versioning and noncurrent:
        main['noncurrent_version_expiration_days'] = noncurrent
    if abort:
        main['abort_incomplete_multipart_upload_days'] = abort
    rules = [main] if len(main) > 3 else []
    if versioning:
        rules.append({'rule_id': 'seawall-pgbackup-delete-markers', 'prefix': prefix, 'status': 'enabled',
                      'expire_object_delete_marker': True})
    return rules


def _azure(container, prefix, expiration, transitions, versioning, noncurrent):
    base_blob = {}
    for days, cls in transitions:
        base_blob['tier_to_' + cls.lower()] = {'days_after_modification_greater_than': days}
    if expiration:
        base_blob['delete'] = {'days_after_modification_greater_than': expiration}
    actions = {}
    if base_blob:
        actions['base_blob'] = base_blob
    if versioning and noncurrent:
        actions['version'] = {'delete': {'days_after_creation_greater_than': noncurrent}}
    if not actions:
        return []
    match = (container + '/' if container else '') + (prefix + '/' if prefix else '')
    filters = {'blob_types': ['blockBlob']}
    if match:
        filters['prefix_match'] = [match]
    return [{'name': 'seawall-pgbackup', 'type': 'Lifecycle', 'enabled': True,
             'definition': {'actions': actions, 'filters': filters}}]


def _gcs(expiration, transitions, versioning, noncurrent):
    rules = [{'action': {'type': 'SetStorageClass', 'storage_class': cls}, 'condition': {'age_days': days}}
             for days, cls in transitions]
    if expiration:
        rules.append({'action': {'type': 'Delete'}, 'condition': {'age_days': expiration}})
    if versioning and noncurrent:
        rules.append({'action': {'type': 'Delete'}, 'condition': {'is_live': False, 'days_since_noncurrent_time': noncurrent}})
    return {'rule': rules}


def cloud_lifecycle(provider, expiration_days=0, transitions=None, prefix='', container='', versioning=False,
                    noncurrent_days=30, abort_multipart_days=7):
    """The provider's lifecycle rules for a backup bucket or container."""
    if provider not in STORAGE_CLASSES:
        raise AnsibleFilterError('cloud_lifecycle: provider %r is not valid: use s3, azure or gcs' % (provider,))
    expiration = _days('expiration_days', expiration_days)
    noncurrent = _days('noncurrent_days', noncurrent_days)
    abort = _days('abort_multipart_days', abort_multipart_days)
    moves = _transitions(provider, transitions, expiration)
    prefix = str(prefix or '').strip('/')
    if provider == 's3':
        return _s3(prefix + '/' if prefix else '', expiration, moves, bool(versioning), noncurrent, abort)
    if provider == 'azure':
        return _azure(str(container or '').strip('/'), prefix, expiration, moves, bool(versioning), noncurrent)
    return _gcs(expiration, moves, bool(versioning), noncurrent)


class FilterModule(object):
    """seawall.pgbackup.cloud_lifecycle"""

    def filters(self):
        return {'cloud_lifecycle': cloud_lifecycle}
