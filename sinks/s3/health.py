"""``S3Sink.health()`` and the check at start: the bucket answers, takes our writes,
and honours conditional writes.

The archive marker (``<prefix>/_bighub-siem-archive.json``) is written once, with a
conditional PUT (``If-None-Match: *``); later checks PUT it again with the same
condition. That proves write permission without creating anything once the marker
exists (S3 checks authorization before the precondition), which matters on a bucket
under Object Lock.

The same PUT proves the store honours the condition: on an existing marker it must
answer 412. A store that ignores ``If-None-Match`` (s3rver, older gateways) stores
the object again and answers 200; on it, a retried object or a manifest written by a
second writer would silently replace what is there, so the sink refuses to run on it
unless ``allow_unconditional_writes`` accepts that risk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sinks.base import SinkUnavailableError
from sinks.s3._client import S3Api

if TYPE_CHECKING:
    from sinks.s3._format import ArchiveSettings

__all__ = ["MARKER", "MARKER_NAME", "NoConditionalWritesError", "check", "marker_key"]


MARKER_NAME = "_bighub-siem-archive.json"
MARKER = b'{"archive":"bighub-siem","layout_version":1}\n'


def marker_key(config: ArchiveSettings) -> str:
    return config.key_prefix() + MARKER_NAME


class NoConditionalWritesError(SinkUnavailableError):
    """The store stored an object again despite ``If-None-Match: *``."""


def check(api: S3Api, config: ArchiveSettings, marker_params: dict[str, Any]) -> bool:
    """HeadBucket, then a conditional PUT of the marker, which must be refused (blocking).

    Returns:
        Whether the store honours conditional writes (False only when
        ``allow_unconditional_writes`` accepts a store that does not).

    Raises:
        NoConditionalWritesError: the store ignores ``If-None-Match`` and
            ``allow_unconditional_writes`` is off.
        SinkError: what the bucket answered, mapped (``_client.map_boto_error``).
    """
    api.head_bucket()
    key = marker_key(config)
    if not api.put_new(key, MARKER, **marker_params):
        return True  # 412: the marker exists and the store refused to replace it
    # The marker was not there (first start on this prefix): now that it exists,
    # the same conditional PUT must be refused.
    if not api.put_new(key, MARKER, **marker_params):
        return True
    if not config.allow_unconditional_writes:
        raise NoConditionalWritesError(
            f"the store does not honour conditional writes: a PUT of {key} with"
            " If-None-Match: * replaced the existing object instead of answering 412."
            " Without them a retried object or a second writer's manifest silently"
            " replaces what is archived. Use a store that supports conditional writes,"
            " or set allow_unconditional_writes = true to accept that risk"
        )
    return False
