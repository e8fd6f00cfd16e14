"""The blocking boto3 side: a typed wrapper over the few S3 calls used, and the one
place where boto3 / botocore errors become sink errors.

Every method here blocks; the sink calls them from its own worker threads.

Error mapping (``map_boto_error``), by what the dispatcher should do next:

- the destination refuses everything until an operator acts (unreachable endpoint,
  missing or rejected credentials, no bucket, access denied, a setting the bucket
  refuses such as Object Lock or KMS): ``SinkUnavailableError``, nothing charged;
- a transient server answer (5xx, throttling, timeouts mid-call, races between
  conditional writes): ``RetryableSinkError``;
- S3 says this object itself can never be stored (too large, malformed request for
  it): ``PermanentSinkError``;
- any other 4xx: ``RetryableSinkError``; attempts are charged, so a persistent one
  ends as a dead letter instead of looping forever.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from sinks._extras import install_hint
from sinks.base import PermanentSinkError, RetryableSinkError, SinkError, SinkUnavailableError
from sinks.s3.config import S3Config

if TYPE_CHECKING:
    from sinks.s3._format import ArchiveSettings

__all__ = ["S3Api", "S3Settings", "api_for", "map_boto_error", "object_params"]

INSTALL_HINT = f"the s3 sink needs boto3: {install_hint('s3')}"

_UNAVAILABLE_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "AuthorizationHeaderMalformed",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidBucketName",
        "InvalidBucketState",
        "InvalidRequest",
        "InvalidArgument",
        "InvalidStorageClass",
        "InvalidToken",
        "MissingUploadObjectWithObjectLockHeaders",
        "NoSuchBucket",
        "NotImplemented",
        "PermanentRedirect",
        "RequestTimeTooSkewed",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
        "UnauthorizedAccess",
    }
)
_RETRYABLE_CODES = frozenset(
    {
        "BadDigest",
        "ConditionalRequestConflict",
        "IncompleteBody",
        "InternalError",
        "NoSuchUpload",
        "OperationAborted",
        "RequestTimeout",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "XAmzContentSHA256Mismatch",
    }
)
_PERMANENT_CODES = frozenset(
    {
        "EntityTooLarge",
        "EntityTooSmall",
        "InvalidDigest",
        "KeyTooLongError",
        "MalformedXML",
        "MetadataTooLarge",
    }
)


def _client_error(code: str, status: int, operation: str) -> SinkError:
    what = f"S3 {operation}: {code or 'error'} (HTTP {status})"
    # HeadBucket answers carry no code: its status alone says what is wrong.
    if code == "NoSuchBucket" or (operation == "head_bucket" and status == 404):
        return SinkUnavailableError(
            f"S3 {operation}: the bucket does not exist (NoSuchBucket, HTTP 404);"
            " create it or fix the bucket setting"
        )
    if operation == "head_bucket" and status == 403:
        return SinkUnavailableError(
            f"S3 {operation}: access to the bucket is denied (HTTP 403); check the"
            " credentials and the bucket policy"
        )
    if code in _UNAVAILABLE_CODES or code.startswith("KMS."):
        return SinkUnavailableError(f"{what}; the bucket refuses us, an operator must act")
    if code in _RETRYABLE_CODES or status >= 500 or status == 429:
        return RetryableSinkError(what)
    if code in _PERMANENT_CODES:
        return PermanentSinkError(f"{what}; this object can never be stored")
    if status in (301, 401, 403, 404):  # HEAD answers carry no code, only the status
        return SinkUnavailableError(f"{what}; the bucket refuses us, an operator must act")
    return RetryableSinkError(what)


def map_boto_error(exc: BaseException, operation: str = "call") -> SinkError:
    """The sink error for anything boto3 / botocore raised during ``operation``.

    Never raises; unknown exceptions become ``RetryableSinkError`` (charged, so they
    end as dead letters rather than loop forever). Messages carry the error class or
    S3 code, never credentials or object contents.
    """
    if isinstance(exc, SinkError):
        return exc
    from botocore import exceptions as bce  # boto3 is installed when a client exists

    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return _client_error(str(error.get("Code", "")), status, operation)
    name = type(exc).__name__
    if isinstance(
        exc,
        (
            bce.EndpointConnectionError,  # refused, DNS, unreachable
            bce.ConnectTimeoutError,
            bce.ProxyConnectionError,
            bce.SSLError,
        ),
    ):
        return SinkUnavailableError(f"S3 {operation}: endpoint unreachable ({name})")
    if isinstance(
        exc,
        (
            bce.NoCredentialsError,
            bce.PartialCredentialsError,
            bce.CredentialRetrievalError,
            bce.NoRegionError,
        ),
    ):
        return SinkUnavailableError(f"S3 {operation}: no usable credentials or region ({name})")
    if isinstance(exc, bce.ParamValidationError):
        return PermanentSinkError(f"S3 {operation}: request refused by the client ({name})")
    # ReadTimeoutError, ConnectionClosedError, ResponseStreamingError and the like: the
    # call may or may not have happened; conditional writes make the retry safe.
    return RetryableSinkError(f"S3 {operation}: {name}")


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


@dataclass(frozen=True, slots=True)
class S3Settings:
    """What building a client needs (secrets already resolved to plain strings here)."""

    bucket: str
    region: str | None = None
    endpoint_url: str | None = None
    # Credentials never appear in a repr (and so never in a log line).
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_pool: int = 4


class S3Api:
    """Typed, blocking access to one bucket. Every method raises ``SinkError`` only."""

    def __init__(self, settings: S3Settings) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise PermanentSinkError(INSTALL_HINT) from exc
        self.bucket = settings.bucket
        try:
            config = Config(
                connect_timeout=settings.connect_timeout,
                read_timeout=settings.read_timeout,
                # botocore retries a few times inside one call; the dispatcher owns the rest.
                retries={"mode": "standard", "total_max_attempts": 3},
                max_pool_connections=settings.max_pool,
                # We send our own SHA-256 on every write; no extra CRC from the SDK.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
        except TypeError as exc:  # the checksum options need botocore >= 1.36
            raise PermanentSinkError(f"botocore is too old for the S3 sink: {exc}") from exc
        try:
            self._s3: Any = boto3.session.Session().client(
                "s3",
                region_name=settings.region,
                endpoint_url=settings.endpoint_url,
                aws_access_key_id=settings.access_key_id,
                aws_secret_access_key=settings.secret_access_key,
                aws_session_token=settings.session_token,
                config=config,
            )
        except Exception as exc:
            raise map_boto_error(exc, "client") from exc

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._s3, operation)(Bucket=self.bucket, **kwargs)
        except Exception as exc:
            raise map_boto_error(exc, operation) from exc

    @staticmethod
    def _precondition_failed(exc: BaseException) -> bool:
        cause = exc.__cause__
        response = getattr(cause, "response", None)
        if not isinstance(response, Mapping):
            return False
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code == "PreconditionFailed" or status == 412

    @staticmethod
    def _missing(exc: BaseException) -> bool:
        response = getattr(exc.__cause__, "response", None)
        if not isinstance(response, Mapping):
            return False
        code = str(response.get("Error", {}).get("Code", ""))
        return code in {"NoSuchKey", "404", "NotFound"}

    def head_bucket(self) -> None:
        self._call("head_bucket")

    def put_new(self, key: str, data: bytes, **extra: Any) -> bool:
        """PUT ``key`` only if it does not exist, with its SHA-256 checksum.

        Returns:
            True when written, False when the key already exists (nothing written).
        """
        try:
            self._call(
                "put_object",
                Key=key,
                Body=data,
                IfNoneMatch="*",
                # The algorithm header too: S3 requires it with Object Lock retention.
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=sha256_b64(data),
                **extra,
            )
        except SinkError as exc:
            if self._precondition_failed(exc):
                return False
            raise
        return True

    def multipart_new(self, key: str, data: bytes, part_bytes: int, **extra: Any) -> bool:
        """Like ``put_new`` in parts (each with its SHA-256); aborted on any failure."""
        upload = self._call("create_multipart_upload", Key=key, ChecksumAlgorithm="SHA256", **extra)
        upload_id = upload["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, len(data), part_bytes), start=1):
                chunk = data[start : start + part_bytes]
                checksum = sha256_b64(chunk)
                answer = self._call(
                    "upload_part",
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=chunk,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=checksum,
                )
                parts.append(
                    {"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": checksum}
                )
            self._call(
                "complete_multipart_upload",
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
        except SinkError as exc:
            self._abort(key, upload_id)
            if self._precondition_failed(exc):
                return False
            raise
        return True

    def _abort(self, key: str, upload_id: str) -> None:
        # An orphaned upload costs storage only; a lifecycle rule cleans it up.
        with contextlib.suppress(SinkError):
            self._call("abort_multipart_upload", Key=key, UploadId=upload_id)

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such key."""
        try:
            answer = self._call("get_object", Key=key)
        except SinkError as exc:
            if self._missing(exc):
                return None
            raise
        try:
            return bytes(answer["Body"].read())
        except Exception as exc:
            raise map_boto_error(exc, "get_object") from exc

    def head(self, key: str) -> dict[str, Any] | None:
        """Object metadata (checksum requested), or None when there is no such key."""
        try:
            answer = self._call("head_object", Key=key, ChecksumMode="ENABLED")
        except SinkError as exc:
            if self._missing(exc):
                return None
            raise
        return dict(answer)

    def keys(self, prefix: str, *, limit: int | None = None) -> Iterator[str]:
        """Keys under ``prefix`` in S3's (lexicographic) order, at most ``limit``."""
        token: str | None = None
        seen = 0
        while True:
            kwargs: dict[str, Any] = {"Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            if limit is not None:
                kwargs["MaxKeys"] = min(1000, limit - seen)
            page = self._call("list_objects_v2", **kwargs)
            for item in page.get("Contents", []):
                yield str(item["Key"])
                seen += 1
                if limit is not None and seen >= limit:
                    return
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return


def api_for(config: S3Config) -> S3Api:
    """A blocking client for the configured bucket (credentials: config, else boto3 chain)."""

    def plain(value: object) -> str | None:
        secret = getattr(value, "get_secret_value", None)
        return str(secret()) if secret is not None else None

    return S3Api(
        S3Settings(
            bucket=config.bucket,
            region=config.region,
            endpoint_url=config.endpoint_url,
            access_key_id=plain(config.access_key_id),
            secret_access_key=plain(config.secret_access_key),
            session_token=plain(config.session_token),
            connect_timeout=config.connect_timeout_seconds,
            read_timeout=config.read_timeout_seconds,
        )
    )


def object_params(
    config: ArchiveSettings, *, kind: Literal["data", "manifest", "marker"], now: float
) -> dict[str, Any]:
    """The PUT parameters of one kind of object: type, storage class, SSE, Object Lock."""
    extra: dict[str, Any] = {
        "ContentType": "application/gzip" if kind == "data" else "application/json",
        # Manifests and the marker are read at every start: keep them readable.
        "StorageClass": config.storage_class if kind == "data" else "STANDARD",
    }
    if config.server_side_encryption != "none":
        extra["ServerSideEncryption"] = config.server_side_encryption
        if config.kms_key_id:
            extra["SSEKMSKeyId"] = config.kms_key_id
    if config.object_lock_mode != "none" and config.retention_days and kind != "marker":
        extra["ObjectLockMode"] = config.object_lock_mode
        extra["ObjectLockRetainUntilDate"] = datetime.fromtimestamp(
            now + config.retention_days * 86400, tz=timezone.utc
        )
    return extra
