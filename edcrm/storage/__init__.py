"""Storage of files (recordings, uploaded chunks, CSVs) behind one interface, chosen by STORAGE_URL:
`file:///abs/path` (LocalStorage) or `s3://bucket/prefix` (S3Storage).

    from edcrm.storage import get_storage
    size = get_storage().save("recordings/1/a.m4a", fileobj)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from flask import current_app

from ..config import ConfigError
from .base import (
    BLOCK_SIZE,
    InvalidKey,
    InvalidPart,
    NoSuchMultipart,
    ObjectNotFound,
    RangedReader,
    Storage,
    StorageError,
    StorageUnavailable,
    validate_key,
)
from .local import LocalStorage

if TYPE_CHECKING:
    from .s3 import S3Storage

__all__ = [
    "BLOCK_SIZE",
    "InvalidKey",
    "InvalidPart",
    "LocalStorage",
    "NoSuchMultipart",
    "ObjectNotFound",
    "RangedReader",
    "S3Storage",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "get_storage",
    "storage_from_url",
    "validate_key",
]

EXTENSION_NAME = "edcrm.storage"


def __getattr__(name: str):
    # boto3 (10 MB of a process's memory) is imported only where the S3 backend is used.
    if name == "S3Storage":
        from .s3 import S3Storage  # boto3, only where the S3 backend is used (as the comment says)

        return S3Storage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_lock = threading.Lock()


def storage_from_url(
    url: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    env: Mapping[str, str] = os.environ,
) -> Storage:
    """The backend for a STORAGE_URL; ConfigError for one it cannot use. Connects to nothing."""
    parts = urlsplit(url or "")
    if parts.query or parts.fragment:
        raise ConfigError(f"STORAGE_URL takes no query or fragment: {url!r}")
    if parts.scheme == "file":
        # file:///abs/path (or file://localhost/abs/path); file://relative would put "relative" in the host.
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ConfigError(f"STORAGE_URL must be file:///absolute/path, got {url!r}")
        return LocalStorage(unquote(parts.path))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigError(f"STORAGE_URL must be s3://bucket/prefix, got {url!r}")
        from .s3 import S3Storage  # boto3: 10 MB, 208 modules (measured) where storage is local

        try:
            prefix = unquote(parts.path).strip("/")
            return S3Storage(
                parts.netloc,
                prefix,
                endpoint_url=endpoint_url,
                # botocore itself reads only AWS_DEFAULT_REGION; the contract names AWS_REGION.
                region=region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            )
        except InvalidKey as error:
            raise ConfigError(f"STORAGE_URL has an invalid prefix: {error}") from None
    raise ConfigError(
        f"STORAGE_URL scheme {parts.scheme or '(none)'!r} is not supported: "
        "use file:///absolute/path or s3://bucket/prefix"
    )


def get_storage() -> Storage:
    """The current app's storage, built from its configuration on first use and kept for the app."""
    app = current_app
    storage = app.extensions.get(EXTENSION_NAME)
    if storage is None:
        with _lock:
            storage = app.extensions.get(EXTENSION_NAME)
            if storage is None:
                storage = storage_from_url(
                    app.config["STORAGE_URL"],
                    endpoint_url=app.config.get("S3_ENDPOINT_URL"),
                    region=app.config.get("AWS_REGION"),
                )
                app.extensions[EXTENSION_NAME] = storage
    return storage
