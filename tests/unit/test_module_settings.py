"""Every option of the modules' common argument spec reaches the engine's Config (module_utils/common.py)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_COLLECTIONS = str(ROOT / ".collections")
if _COLLECTIONS not in sys.path:
    sys.path.insert(0, _COLLECTIONS)

from seawall_pgbackup.config.options import module_options  # noqa: E402

SIGNER = "ed25519:/FL8R0arxoONeOC6Tq0yFTOGFf1eYo1nlLnkdihoYbA="


class _Module:
    def __init__(self, params):
        self.params = params

    def fail_json(self, **result):
        raise AssertionError(result["msg"])


def test_the_signing_and_policy_options_reach_the_config(tmp_path):
    from ansible_collections.seawall.pgbackup.plugins.module_utils.common import pgbackup_config

    params = {o.module: None for o in module_options()}
    params.update(backup_dir=str(tmp_path), repository_id="highseas-prod", accept_unsigned=True,
                  accept_unencrypted=True, encryption_trusted_signers=[SIGNER],
                  encryption_retired_keys=["0123456789ABCDEF"],
                  encryption_signing_key_file=str(tmp_path / "signing.pem"))
    cfg = pgbackup_config(_Module(params))
    assert cfg.repository_id == "highseas-prod" and cfg.accept_unsigned and cfg.accept_unencrypted
    assert cfg.encryption_trusted_signers == [SIGNER] and cfg.encryption_retired_keys == ["0123456789abcdef"]
    assert cfg.encryption_signing_key_file == str(tmp_path / "signing.pem")
    # Unset options leave the lower layers (environment, config file, defaults) in charge.
    cfg = pgbackup_config(_Module({o.module: None for o in module_options()}))
    assert cfg.repository_id == "default" and not cfg.accept_unsigned and cfg.encryption_trusted_signers == []
