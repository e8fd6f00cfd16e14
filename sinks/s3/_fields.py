"""Setting types the S3-backed sinks share (the S3 archive and Security Lake).

Each checks without I/O, so ``check-config`` reports a bad value before start.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

from sinks._secrets import SecretRef
from sinks.s3.manifest import load_private_key

__all__ = ["BucketName", "EndpointUrl", "SigningKey"]

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def _bucket(value: str) -> str:
    if not _BUCKET.fullmatch(value) or ".." in value:
        raise ValueError("not a valid S3 bucket name (3-63 of a-z 0-9 . -)")
    return value


def _http_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value


def _parsable_key(value: SecretRef) -> SecretRef:
    load_private_key(value.get_secret_value())  # raises ValueError without echoing it
    return value


BucketName = Annotated[str, AfterValidator(_bucket)]
EndpointUrl = Annotated[str | None, AfterValidator(_http_url)]
SigningKey = Annotated[SecretRef, AfterValidator(_parsable_key)]
