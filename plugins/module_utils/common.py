# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every seawall.pgbackup module shares: the common options and the bridge to the engine.

The options are declared in the engine's option table (``config/options.py``). Every module accepts all of them
(the action group's ``module_defaults`` passes them to each) and documents them through the fragments of
``plugins/doc_fragments/common.py`` as it uses them (``seawall.pgbackup.common.trust`` ...) or in its own
DOCUMENTATION (``database_url``); tests/unit/test_options.py keeps them in step.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from ansible.module_utils.basic import env_fallback

from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup import MINIMUM_PYTHON
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.config.options import module_options
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.config.settings import load_config
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.core.errors import (
    BackupError,
    NotFound,
    exit_code_of,
    render,
)
from ansible_collections.seawall.pgbackup.plugins.module_utils.pgbackup.ops.perform import perform


def pgbackup_common_argument_spec():
    """The connection and repository options of every module (a fresh dict per call), from the option table.

    No argspec defaults: the engine applies the environment, then the config file, then its own default
    (BACKUP_DIR, "directory", the option table's module default) -- the same order as the seawall-pgbackup
    command. Encryption options only say where keys are (docs/encryption.md); keys stay in 0600 files.
    """
    spec = {}
    for option in module_options():
        entry = dict(type=option.module_type)
        if option.module_elements:
            entry['elements'] = option.module_elements
        if option.module_choices:
            entry['choices'] = list(option.module_choices)
        if option.no_log is not None:
            entry['no_log'] = option.no_log
        if option.module_fallback:
            entry['fallback'] = (env_fallback, [option.env])
        spec[option.module] = entry
    return spec


# How a module says what an engine error's hint asks for (core/errors.HINTS), in its options' words.
MODULE_HINTS = {
    'replace-target': ' or set replace=true to replace it',
    'partial-aside': ' (set replace=false: the tables go into a new database, or into target_url)',
    'replace-rows': '; set replace=true to replace rows that are already there',
    'checksum-level': ' (level=checksum)',
    'keygen': " (create one with 'seawall-pgbackup keygen --keyring DIR' on the host)",
    'keygen-signing': " (create one with 'seawall-pgbackup keygen --signing --output FILE' on the host)",
    'sync': "; run 'seawall-pgbackup sync' on the host to retry",
    'list': ' (see pg_backup_info)',
    'list-destination': " (see 'seawall-pgbackup list --destination %s' on the host)",
    'before-latest': ' (before goes with backup=latest)',
    'rekey-selection': ': backup ids, a type, a time or all backups',
    'database-url': ' (or the database_url option)',
    'destination-primary': '; leave it out of the destinations',
}


def fail_on_backup_error(module, exc, **result):
    """Report an engine failure: its one-line message (with its hint in option names), the step that
    failed, the error kind and the exit code the host command would have returned (docs/errors.md)."""
    module.fail_json(msg=render(exc, MODULE_HINTS), step=getattr(exc, 'step', 'backup'),
                     error_kind=getattr(exc, 'kind', 'failed'), error_exit_code=exit_code_of(exc), **result)


@contextmanager
def engine_errors(module, **result):
    """``with engine_errors(module):`` turns a BackupError into ``fail_json(msg=..., step=...)``."""
    try:
        yield
    except BackupError as exc:
        fail_on_backup_error(module, exc, **result)


def planned(module, result, make_plan):
    """The engine's plan. In check mode a missing ``latest`` is a warning, not a failure: an earlier task of the
    play (pg_backup) may take it."""
    with engine_errors(module, **result):
        try:
            return make_plan()
        except NotFound as exc:
            if module.check_mode and module.params['backup'] == 'latest':
                module.warn('%s: the run fails unless an earlier task takes one' % exc)
                result['changed'] = True
                module.exit_json(**result)
            raise


def check_python(module):
    """Fail in one line on a managed host whose Python is older than the engine's minimum."""
    if sys.version_info[:2] < MINIMUM_PYTHON:
        module.fail_json(msg="seawall.pgbackup needs Python %d.%d or later on the managed host; %s is Python %s: set "
                             "ansible_python_interpreter to a newer one" % (MINIMUM_PYTHON + (
                                 sys.executable, sys.version.split()[0])))


def pgbackup_config(module, **overrides):
    """The engine Config for this module run.

    Precedence, lowest first: engine defaults, ``config_file`` (or BACKUP_CONFIG), the users'
    environment variables in the module's environment (BACKUP_COMPRESSION, BACKUP_ENCRYPTION, ...),
    then the module's options. ``None`` values leave the lower layers in charge.
    """
    check_python(module)
    params = module.params
    settings = dict(
        database_url=params.get('database_url'),
        backup_dir=params.get('backup_dir'),
        pg_bin_dir=params.get('pg_bin_dir'),
    )
    for name in ('encryption', 'encryption_mode', 'encryption_key_file', 'encryption_keyring',
                 'encryption_recipients', 'encryption_identity_file', 'encryption_signing_key_file',
                 'encryption_trusted_signers', 'encryption_retired_keys', 'repository_id', 'accept_unsigned',
                 'accept_unencrypted'):
        settings[name] = params.get(name)
    settings.update(overrides)
    try:
        return load_config(env=os.environ, config_file=params.get('config_file'), overrides=settings, module=True)
    except BackupError as exc:
        fail_on_backup_error(module, exc)
        raise  # not reached: fail_json exits


def run_operation(module, cfg, command, kind, action, report=None, exit_code=None, *, partial_result=None, **result):
    """Run an engine operation through the same run hook as the CLI and timers (run record, metrics,
    notifications); a BackupError becomes ``fail_json(msg=..., step=...)`` with ``result``, updated with
    ``partial_result()`` when given (what the operation did before it failed).

    Call it only outside check mode: a plan is not a run.
    """
    try:
        return perform(cfg, command, kind, action, report=report, exit_code=exit_code or (lambda _result: 0))
    except BackupError as exc:
        if partial_result is not None:
            result.update(partial_result())
        # An operation that ran and failed may carry what it did (``exc.result``: the failed record, the report).
        fail_on_backup_error(module, exc, **dict(result, **(getattr(exc, 'result', None) or {})))
        raise  # not reached: fail_json exits
