"""``S3Sink.health()`` and the check at start: the bucket answers and takes our writes.

The archive marker (``<prefix>/_bighub-siem-archive.json``) is written once, with a
conditional PUT; later checks PUT it again with the same condition. That proves write
permission without creating anything once the marker exists (S3 checks authorization
before the precondition), which matters on a bucket under Object Lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sinks.s3._client import S3Api

if TYPE_CHECKING:
    from sinks.s3._format import ArchiveSettings

__all__ = ["MARKER", "MARKER_NAME", "check", "marker_key"]

MARKER_NAME = "_bighub-siem-archive.json"
MARKER = b'{"archive":"bighub-siem","layout_version":1}\n'


def marker_key(config: ArchiveSettings) -> str:
    return config.key_prefix() + MARKER_NAME


def check(api: S3Api, config: ArchiveSettings, marker_params: dict[str, Any]) -> None:
    """HeadBucket, then a conditional PUT of the marker (blocking).

    Raises:
        SinkError: what the bucket answered, mapped (``_client.map_boto_error``).
    """
    api.head_bucket()
    api.put_new(marker_key(config), MARKER, **marker_params)
