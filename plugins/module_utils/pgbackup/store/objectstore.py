# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""S3 (any S3-compatible endpoint) and Azure Blob stores through obstore.

obstore (Python bindings of the Rust ``object_store`` crate) covers both in one ~5 MB wheel with no
Python dependencies: multipart uploads from a file in ``part_size`` chunks with at most ``concurrency``
parts in flight (constant memory), retries with exponential backoff and jitter on 5xx, connection errors
and timeouts, credentials from the environment, web identity and instance metadata. docs/storage.md
explains the choice (and why GCS uses the official SDK instead).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, BinaryIO, Dict, Iterator, List, Optional

from ..config.destinations import DestinationSettings, read_credentials_file
from .base import CHUNK, ObjectInfo, Store, join_key, one_line


def _obstore() -> Any:
    try:
        import obstore  # pylint: disable=import-outside-toplevel
    except ImportError:
        from .base import DestinationError  # pylint: disable=import-outside-toplevel
        raise DestinationError("the s3 and azure destinations need the Python package 'obstore' "
                               "(pip install obstore)") from None
    return obstore


def _retry_config(settings: DestinationSettings) -> Dict[str, Any]:
    return {
        "max_retries": settings.retries,
        "retry_timeout": timedelta(seconds=settings.retry_timeout),
        "backoff": {"init_backoff": timedelta(milliseconds=200), "max_backoff": timedelta(seconds=15), "base": 2},
    }


def _client_options(settings: DestinationSettings) -> Dict[str, Any]:
    options: Dict[str, Any] = {"connect_timeout": "10s", "timeout": "%ds" % max(30, int(settings.retry_timeout))}
    if settings.endpoint and settings.endpoint.startswith("http://"):
        options["allow_http"] = True
    return options


class ObjectStoreDestination(Store):
    """Shared by S3 and Azure: obstore's put/get/list/head/delete over a store object."""

    def __init__(self, settings: DestinationSettings) -> None:
        super().__init__(settings.name)
        self.settings = settings
        self.kind = settings.kind
        self._store: Any = None

    @property
    def store(self) -> Any:
        if self._store is None:
            self._store = self._make_store()
        return self._store

    def _make_store(self) -> Any:
        raise NotImplementedError

    def _attributes(self, sha256: str) -> Dict[str, str]:
        attributes = {"Content-Type": "application/octet-stream", "sha256": sha256}
        if self.settings.storage_class:
            attributes["Storage-Class"] = self.settings.storage_class
        return attributes

    def _full(self, key: str) -> str:
        return join_key(self.settings.prefix, key)

    def _relative(self, full: str) -> str:
        prefix = self.settings.prefix.strip("/")
        return full[len(prefix) + 1:] if prefix and full.startswith(prefix + "/") else full

    def write(self, key: str, source: BinaryIO, size: int, sha256: str) -> ObjectInfo:
        # A multipart upload is committed only by its last request: an interrupted one leaves no object.
        obstore = _obstore()
        try:
            obstore.put(self.store, self._full(key), source, attributes=self._attributes(sha256),
                        use_multipart=size > self.settings.part_size, chunk_size=self.settings.part_size,
                        max_concurrency=self.settings.concurrency)
        except Exception as exc:  # pylint: disable=broad-except
            raise self.error("upload", key, one_line(exc)) from None
        info = self.stat(key)
        if info is None:
            raise self.error("upload", key, "the object is not there after the upload")
        return info

    def put_bytes(self, key: str, data: bytes) -> None:
        obstore = _obstore()
        try:
            obstore.put(self.store, self._full(key), data, use_multipart=False,
                        attributes={"Content-Type": "application/json"})
        except Exception as exc:  # pylint: disable=broad-except
            raise self.error("upload", key, one_line(exc)) from None

    def read(self, key: str) -> Iterator[bytes]:
        obstore = _obstore()
        try:
            result = obstore.get(self.store, self._full(key))
            yield from result.stream(min_chunk_size=CHUNK)
        except Exception as exc:  # pylint: disable=broad-except
            raise self.error("download", key, one_line(exc)) from None

    def list(self, prefix: str = "") -> List[ObjectInfo]:
        obstore = _obstore()
        found: List[ObjectInfo] = []
        base = self.settings.prefix.strip("/")
        full_prefix = join_key(base, prefix) if prefix else (base + "/" if base else None)
        try:
            for batch in obstore.list(self.store, full_prefix):
                for meta in batch:
                    key = self._relative(meta["path"])
                    if prefix and not key.startswith(prefix):
                        continue
                    found.append(ObjectInfo(key, int(meta["size"]), meta.get("last_modified"),
                                            (meta.get("e_tag") or "").strip('"') or None))
        except Exception as exc:  # pylint: disable=broad-except
            raise self.error("list", prefix, one_line(exc)) from None
        return sorted(found, key=lambda i: i.key)

    def stat(self, key: str) -> Optional[ObjectInfo]:
        obstore = _obstore()
        try:
            meta = obstore.head(self.store, self._full(key))
        except FileNotFoundError:
            return None
        except Exception as exc:  # pylint: disable=broad-except
            raise self.error("head", key, one_line(exc)) from None
        return ObjectInfo(key, int(meta["size"]), meta.get("last_modified"),
                          (meta.get("e_tag") or "").strip('"') or None)

    def metadata(self, key: str) -> Optional[Dict[str, str]]:
        """User metadata of an object (a GET whose body is not read)."""
        obstore = _obstore()
        try:
            result = obstore.get(self.store, self._full(key), options={"head": True})
            return {str(k): str(v) for k, v in result.attributes.items()}
        except Exception as exc:  # pylint: disable=broad-except
            raise self.error("head", key, one_line(exc)) from None

    def delete(self, key: str) -> None:
        obstore = _obstore()
        try:
            obstore.delete(self.store, self._full(key))
        except FileNotFoundError:
            return
        except Exception as exc:  # pylint: disable=broad-except
            raise self.error("delete", key, one_line(exc)) from None


class S3Destination(ObjectStoreDestination):
    def uri(self, key: str = "") -> str:
        return "s3://%s/%s" % (self.settings.bucket, self._full(key) if key else self.settings.prefix.strip("/"))

    def _make_store(self) -> Any:
        from obstore.store import S3Store  # pylint: disable=import-outside-toplevel

        config: Dict[str, Any] = {}
        if self.settings.endpoint:
            config["endpoint"] = self.settings.endpoint
        if self.settings.region:
            config["region"] = self.settings.region
        if self.settings.sse:
            config["server_side_encryption"] = self.settings.sse
        if self.settings.kms_key_id:
            config["sse_kms_key_id"] = self.settings.kms_key_id
        if self.settings.service_checksum:
            config["checksum_algorithm"] = "SHA256"
        secrets = read_credentials_file(self.settings)
        for env_name, option in (("AWS_ACCESS_KEY_ID", "access_key_id"), ("AWS_SECRET_ACCESS_KEY", "secret_access_key"),
                                 ("AWS_SESSION_TOKEN", "session_token")):
            if secrets.get(env_name):
                config[option] = secrets[env_name]
        try:
            return S3Store(self.settings.bucket, config=config, client_options=_client_options(self.settings),
                           retry_config=_retry_config(self.settings))
        except Exception as exc:  # pylint: disable=broad-except
            raise self.error("connect", "", one_line(exc)) from None


class AzureDestination(ObjectStoreDestination):
    def uri(self, key: str = "") -> str:
        return "azure://%s/%s/%s" % (self.settings.account or "", self.settings.bucket,
                                     self._full(key) if key else self.settings.prefix.strip("/"))

    def _make_store(self) -> Any:
        from obstore.store import AzureStore  # pylint: disable=import-outside-toplevel

        config: Dict[str, Any] = {}
        if self.settings.account:
            config["account_name"] = self.settings.account
        if self.settings.endpoint:
            config["endpoint"] = self.settings.endpoint
        secrets = read_credentials_file(self.settings)
        for env_name, option in (("AZURE_STORAGE_ACCOUNT_KEY", "account_key"), ("AZURE_STORAGE_SAS_TOKEN", "sas_key"),
                                 ("AZURE_CLIENT_SECRET", "client_secret")):
            if secrets.get(env_name):
                config[option] = secrets[env_name]
        try:
            return AzureStore(self.settings.bucket, config=config, client_options=_client_options(self.settings),
                              retry_config=_retry_config(self.settings))
        except Exception as exc:  # pylint: disable=broad-except
            raise self.error("connect", "", one_line(exc)) from None
