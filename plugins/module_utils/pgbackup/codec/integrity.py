# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files against their manifest: present, of the recorded size and sha256."""

from __future__ import annotations

import hashlib
import os

from ..core.errors import VerifyError
from ..model.manifest import Backup


def verify_checksums(backup: Backup) -> None:
    """Every file present with the manifest's size and sha256; names the first file that differs."""
    for entry in backup.manifest.files:
        path = backup.file_path(entry)
        try:
            size = os.path.getsize(path)
        except OSError:
            raise VerifyError("%s: file %s is missing" % (backup.id, path)) from None
        if size != entry.size:
            raise VerifyError("%s: file %s has %d bytes, the manifest recorded %d (truncated or replaced)"
                              % (backup.id, path, size, entry.size))
        if sha256_file(path) != entry.sha256:
            raise VerifyError("%s: file %s does not match its sha256 (corrupted)" % (backup.id, path))


CHUNK = 1024 * 1024


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
