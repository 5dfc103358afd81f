# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: s3_bucket_changes
short_description: What amazon.aws.s3_bucket and community.aws.s3_lifecycle would change on a bucket
version_added: 0.1.0
author: Seawall Platform Team (@seawall)
description:
  - Neither C(amazon.aws.s3_bucket) nor C(community.aws.s3_lifecycle) supports check mode, so the cloud role
    reads the bucket with C(amazon.aws.s3_bucket_info) and this filter compares it with the wanted settings.
    In check mode the role reports these changes (and C(changed)) instead of running the two modules.
  - Lifecycle rules are compared by ID, in the shape C(community.aws.s3_lifecycle) builds from its options (its own
    C(build_rule) builds the wanted rule, so this filter needs community.aws like the role does); rules with other
    IDs are left alone (the module leaves them too).
options:
  _input:
    description:
      - One entry of C(amazon.aws.s3_bucket_info)'s C(buckets) with C(bucket_versioning), C(bucket_encryption),
        C(public_access_block) and C(bucket_lifecycle_configuration) facts, or C(None) (or empty) when the bucket
        does not exist.
    type: dict
    required: true
  versioning:
    description: Versioning wanted on; C(None) leaves it as it is.
    type: bool
  encryption:
    description: Default encryption, C(AES256), C(aws:kms) or C(none) (leave as it is).
    type: string
    default: none
  kms_key_id:
    description: The KMS key with C(aws:kms); empty for the account's default key.
    type: string
    default: ''
  public_access_block:
    description: Whether all four public access block settings must be on; C(None) leaves them as they are.
    type: bool
  tags:
    description: Tags the bucket must carry (others are left alone, as C(purge_tags=false) does); needs the C(bucket_tagging) fact.
    type: dict
    default: {}
  rules:
    description: The lifecycle rules, each a dictionary of C(community.aws.s3_lifecycle) options with C(rule_id).
    type: list
    elements: dict
    default: []
"""

EXAMPLES = r"""
- name: Report what would change
  ansible.builtin.debug:
    msg: "{{ (info.buckets | first | default(None)) | seawall.pgbackup.s3_bucket_changes(versioning=true, encryption='AES256') }}"
"""

RETURN = r"""
_value:
  description: One line per change; empty when the bucket is as wanted.
  type: list
  elements: string
"""

from types import SimpleNamespace

from ansible.errors import AnsibleFilterError

INTEGER_OPTIONS = ('abort_incomplete_multipart_upload_days', 'expiration_days', 'noncurrent_version_expiration_days',
                   'noncurrent_version_keep_newer', 'transition_days', 'noncurrent_version_transition_days')
PUBLIC_ACCESS_KEYS = ('BlockPublicAcls', 'IgnorePublicAcls', 'BlockPublicPolicy', 'RestrictPublicBuckets')


def _lifecycle_rule(params):
    """The rule community.aws.s3_lifecycle puts for these options: its own build_rule (the role applies the rules
    with that module, so the comparison cannot drift from what it writes)."""
    try:
        from ansible_collections.community.aws.plugins.modules.s3_lifecycle import build_rule
    except ImportError as exc:
        raise AnsibleFilterError('s3_bucket_changes needs the collection community.aws (requirements-cloud.yml): %s'
                                 % exc)
    wanted = dict({'status': 'enabled', 'storage_class': 'glacier', 'noncurrent_version_storage_class': 'glacier'},
                  **{key: value for key, value in params.items() if value is not None})
    try:
        for key in INTEGER_OPTIONS:  # what the module's argument_spec converts before build_rule sees them
            if key in wanted:
                wanted[key] = int(wanted[key])
        return build_rule(None, SimpleNamespace(params=wanted))  # it reads only module.params
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError('s3_bucket_changes: lifecycle rule %s is not valid: %s' % (params.get('rule_id'), exc))


def _comparable(rule):
    keys = ('ID', 'Status', 'AbortIncompleteMultipartUpload', 'Expiration', 'NoncurrentVersionExpiration', 'Transitions')
    out = {key: rule[key] for key in keys if rule.get(key) not in (None, [], {})}
    found = rule.get('Filter')
    if found is None and 'Prefix' in rule:  # the legacy shape: Prefix beside the rule
        found = {'Prefix': rule['Prefix']}
    out['Prefix'] = (found or {}).get('Prefix', '')
    if 'Transitions' in out:
        out['Transitions'] = sorted(({'Days': t.get('Days'), 'StorageClass': t.get('StorageClass')}
                                     for t in out['Transitions']), key=lambda t: (t['Days'] or 0, t['StorageClass'] or ''))
    return out


def s3_bucket_changes(bucket, versioning=None, encryption='none', kms_key_id='', public_access_block=None, rules=None,
                      tags=None):
    """One line per difference between the bucket (None: missing) and the wanted settings."""
    if bucket is not None and not isinstance(bucket, dict):
        raise AnsibleFilterError('s3_bucket_changes: the input must be an s3_bucket_info bucket or None, got %s'
                                 % type(bucket).__name__)
    if encryption not in ('AES256', 'aws:kms', 'none', None, ''):
        raise AnsibleFilterError("s3_bucket_changes: encryption=%r is not valid: use AES256, aws:kms or none" % (encryption,))
    rules = rules or []
    if not isinstance(rules, list) or not all(isinstance(r, dict) and r.get('rule_id') for r in rules):
        raise AnsibleFilterError('s3_bucket_changes: rules must be a list of s3_lifecycle options, each with rule_id')
    changes = []
    if not bucket:
        changes.append('create the bucket')
        bucket = {}
    if versioning is not None:
        status = (bucket.get('bucket_versioning') or {}).get('Status') or 'Disabled'
        wanted = 'Enabled' if versioning else 'Suspended'
        if status != wanted and not (status == 'Disabled' and not versioning):
            changes.append('versioning: %s -> %s' % (status, wanted))
    if encryption in ('AES256', 'aws:kms'):
        configured = (bucket.get('bucket_encryption') or {}).get('ServerSideEncryptionConfiguration') or {}
        default = ((configured.get('Rules') or [{}])[0]).get('ApplyServerSideEncryptionByDefault') or {}
        have = (default.get('SSEAlgorithm') or 'none', default.get('KMSMasterKeyID') or '')
        want = (encryption, kms_key_id or '' if encryption == 'aws:kms' else '')
        if have[0] != want[0] or (want[1] and have[1] != want[1]):
            changes.append('default encryption: %s -> %s' % (' '.join(filter(None, have)), ' '.join(filter(None, want))))
    if public_access_block is not None:
        block = (bucket.get('public_access_block') or {}).get('PublicAccessBlockConfiguration') or {}
        wrong = [key for key in PUBLIC_ACCESS_KEYS if bool(block.get(key)) != bool(public_access_block)]
        if wrong:
            changes.append('public access block: %s -> %s' % (', '.join(wrong), 'on' if public_access_block else 'off'))
    tags = tags or {}
    if not isinstance(tags, dict):
        raise AnsibleFilterError('s3_bucket_changes: tags must be a dictionary, got %s' % type(tags).__name__)
    current_tags = bucket.get('bucket_tagging') or {}
    wrong_tags = sorted(key for key, value in tags.items() if current_tags.get(key) != str(value))
    if wrong_tags:
        changes.append('tags: %s' % ', '.join(wrong_tags))
    existing = {rule.get('ID'): _comparable(rule)
                for rule in (bucket.get('bucket_lifecycle_configuration') or {}).get('Rules') or []}
    for params in rules:
        wanted_rule = _comparable(_lifecycle_rule(params))
        current = existing.get(params['rule_id'])
        if current is None:
            changes.append('add lifecycle rule %s' % params['rule_id'])
        elif current != wanted_rule:
            changes.append('update lifecycle rule %s' % params['rule_id'])
    return changes


class FilterModule(object):
    """seawall.pgbackup.s3_bucket_changes"""

    def filters(self):
        return {'s3_bucket_changes': s3_bucket_changes}
