# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Google Cloud Storage through the official ``google-cloud-storage`` SDK (JSON API).

Why not obstore here: obstore's GCS store speaks the XML API, which no local stand-in implements
(fake-gcs-server answers the JSON API only), so it could not be tested for real; the SDK's resumable
uploads (``part_size`` chunks, constant memory, crc32c checked against the service's) are. See
docs/storage.md.
"""

from __future__ import annotations

from typing import Any, BinaryIO, Dict, Iterator, List, Optional

from ..config.destinations import DestinationSettings
from .base import CHUNK, DestinationError, ObjectInfo, Store, join_key, one_line

_GRANULE = 256 * 1024  # resumable chunks must be multiples of 256 KiB


def _sdk() -> Any:
    try:
        from google.cloud import storage  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise DestinationError("the gcs destination needs the Python package 'google-cloud-storage' "
                               "(pip install google-cloud-storage)") from None
    return storage


class GcsDestination(Store):
    kind = "gcs"

    def __init__(self, settings: DestinationSettings) -> None:
        super().__init__(settings.name)
        self.settings = settings
        self._bucket: Any = None

    def uri(self, key: str = "") -> str:
        return "gs://%s/%s" % (self.settings.bucket, self._full(key) if key else self.settings.prefix.strip("/"))

    def _full(self, key: str) -> str:
        return join_key(self.settings.prefix, key)

    def _relative(self, full: str) -> str:
        prefix = self.settings.prefix.strip("/")
        return full[len(prefix) + 1:] if prefix and full.startswith(prefix + "/") else full

    @property
    def bucket(self) -> Any:
        if self._bucket is None:
            storage = _sdk()
            kwargs: Dict[str, Any] = {"project": self.settings.project or "seawall-pgbackup"}
            if self.settings.endpoint:
                kwargs["client_options"] = {"api_endpoint": self.settings.endpoint.rstrip("/")}
            try:
                if self.settings.anonymous:
                    from google.auth.credentials import AnonymousCredentials  # pylint: disable=import-outside-toplevel
                    kwargs["credentials"] = AnonymousCredentials()
                elif self.settings.credentials_file:
                    from google.oauth2 import service_account  # pylint: disable=import-outside-toplevel

                    from ..config.destinations import check_private_file  # pylint: disable=import-outside-toplevel
                    check_private_file(self.settings)
                    kwargs["credentials"] = service_account.Credentials.from_service_account_file(
                        self.settings.credentials_file,
                        scopes=["https://www.googleapis.com/auth/devstorage.read_write"])
                client = storage.Client(**kwargs)
            except DestinationError:
                raise
            except Exception as exc:  # pylint: disable=broad-except
                raise self.error("connect", "", one_line(exc)) from None
            self._bucket = client.bucket(self.settings.bucket)
        return self._bucket

    def _retry(self) -> Any:
        from google.cloud.storage.retry import DEFAULT_RETRY  # pylint: disable=import-outside-toplevel

        retry = DEFAULT_RETRY.with_delay(initial=0.2, maximum=15.0, multiplier=2.0)
        if hasattr(retry, "with_timeout"):
            return retry.with_timeout(float(self.settings.retry_timeout))
        return retry.with_deadline(float(self.settings.retry_timeout))

    def write(self, key: str, source: BinaryIO, size: int, sha256: str) -> ObjectInfo:
        chunk = max(_GRANULE, self.settings.part_size // _GRANULE * _GRANULE)
        blob = self.bucket.blob(self._full(key), chunk_size=chunk)
        blob.metadata = {"sha256": sha256}
        if self.settings.storage_class:
            blob.storage_class = self.settings.storage_class
        try:
            # crc32c is computed while streaming and compared with the service's: a mismatch fails the upload.
            blob.upload_from_file(source, size=size, checksum="crc32c", retry=self._retry(),
                                  content_type="application/octet-stream", timeout=max(30, self.settings.retry_timeout))
        except Exception as exc:  # pylint: disable=broad-except
            raise self.error("upload", key, one_line(exc)) from None
        info = self.stat(key)
        if info is None:
            raise self.error("upload", key, "the object is not there after the upload")
        return info

    def put_bytes(self, key: str, data: bytes) -> None:
        blob = self.bucket.blob(self._full(key))
        try:
            blob.upload_from_string(data, content_type="application/json", retry=self._retry(),
                                    timeout=max(30, self.settings.retry_timeout))
        except Exception as exc:  # pylint: disable=broad-except
            raise self.error("upload", key, one_line(exc)) from None

    def read(self, key: str) -> Iterator[bytes]:
        try:
            with self.bucket.blob(self._full(key)).open("rb", chunk_size=CHUNK, retry=self._retry()) as reader:
                while True:
                    chunk = reader.read(CHUNK)
                    if not chunk:
                        return
                    yield chunk
        except DestinationError:
            raise
        except Exception as exc:  # pylint: disable=broad-except
            raise self.error("download", key, one_line(exc)) from None

    def _info(self, blob: Any) -> ObjectInfo:
        return ObjectInfo(self._relative(blob.name), int(blob.size or 0), blob.updated, blob.etag,
                          "crc32c:%s" % blob.crc32c if blob.crc32c else None, dict(blob.metadata or {}))

    def list(self, prefix: str = "") -> List[ObjectInfo]:
        base = self.settings.prefix.strip("/")
        full_prefix = join_key(base, prefix) if prefix else (base + "/" if base else None)
        try:
            blobs = list(self.bucket.client.list_blobs(self.bucket, prefix=full_prefix, retry=self._retry()))
        except Exception as exc:  # pylint: disable=broad-except
            raise self.error("list", prefix, one_line(exc)) from None
        return sorted((self._info(b) for b in blobs), key=lambda i: i.key)

    def stat(self, key: str) -> Optional[ObjectInfo]:
        try:
            blob = self.bucket.get_blob(self._full(key), retry=self._retry())
        except Exception as exc:  # pylint: disable=broad-except
            raise self.error("head", key, one_line(exc)) from None
        return None if blob is None else self._info(blob)

    def metadata(self, key: str) -> Optional[Dict[str, str]]:
        info = self.stat(key)
        return dict(info.metadata or {}) if info else {}

    def delete(self, key: str) -> None:
        from google.api_core.exceptions import NotFound  # pylint: disable=import-outside-toplevel

        try:
            self.bucket.blob(self._full(key)).delete(retry=self._retry())
        except NotFound:
            return
        except Exception as exc:  # pylint: disable=broad-except
            raise self.error("delete", key, one_line(exc)) from None
