# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Store drivers: the backup directory, and the destinations copies go to (a directory, S3, Azure Blob, GCS).

Drivers only: the catalog over a store (listing, selection, retention, verification) is repo/catalog.py.
"""

from __future__ import annotations

import os
from typing import Any, List, Mapping, Optional

from ..config.destinations import DestinationSettings, parse_destinations, remote_destinations
from ..core.errors import ConfigError
from .base import DestinationError, ObjectInfo, Store
from .local import LocalStore

__all__ = ["Store", "LocalStore", "DestinationError", "DestinationSettings", "ObjectInfo",
           "open_destination", "configured", "remote_settings", "find_settings"]


def open_destination(settings: DestinationSettings) -> Store:
    """The store of one configured destination (the client libraries are imported only when needed)."""
    from ..config.destinations import check_complete  # pylint: disable=import-outside-toplevel
    check_complete(settings)
    if settings.kind == "local":
        return LocalStore(settings.name, settings.path or ".")
    if settings.kind == "s3":
        from .objectstore import S3Destination  # pylint: disable=import-outside-toplevel
        return S3Destination(settings)
    if settings.kind == "azure":
        from .objectstore import AzureDestination  # pylint: disable=import-outside-toplevel
        return AzureDestination(settings)
    from .gcs import GcsDestination  # pylint: disable=import-outside-toplevel
    return GcsDestination(settings)


def configured(cfg: Any, env: Optional[Mapping[str, str]] = None) -> List[DestinationSettings]:
    known = getattr(cfg, "destination_settings", None)
    if known is not None and env is None:
        return list(known)
    return parse_destinations(cfg.destinations, os.environ if env is None else env)


def remote_settings(cfg: Any) -> List[DestinationSettings]:
    return remote_destinations(configured(cfg))


def find_settings(cfg: Any, name: str) -> DestinationSettings:
    everything = configured(cfg)
    for settings in everything:
        if settings.name == name:
            if settings.is_primary:
                raise ConfigError("destination %r is the backup directory itself" % name, hint="destination-primary")
            return settings
    names = ", ".join(s.name for s in everything if not s.is_primary) or "none configured"
    raise ConfigError("destination %r is not configured (configured: %s)" % (name, names))
