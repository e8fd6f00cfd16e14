"""``map_boto_error``: every boto3 / botocore error the S3 sink can meet maps to ours."""

from __future__ import annotations

import pytest
from botocore import exceptions as bce

from sinks import PermanentSinkError, RetryableSinkError, SinkError, SinkUnavailableError
from sinks.s3._client import S3Api, S3Settings, map_boto_error


def client_error(code: str, status: int, message: str = "details") -> bce.ClientError:
    return bce.ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "PutObject",
    )


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        # the operator must act; nothing may be dead-lettered meanwhile
        ("AccessDenied", 403, SinkUnavailableError),
        ("AllAccessDisabled", 403, SinkUnavailableError),
        ("InvalidAccessKeyId", 403, SinkUnavailableError),
        ("SignatureDoesNotMatch", 403, SinkUnavailableError),
        ("ExpiredToken", 400, SinkUnavailableError),
        ("NoSuchBucket", 404, SinkUnavailableError),
        ("PermanentRedirect", 301, SinkUnavailableError),
        ("RequestTimeTooSkewed", 403, SinkUnavailableError),
        ("InvalidRequest", 400, SinkUnavailableError),  # e.g. Object Lock on a plain bucket
        ("InvalidStorageClass", 400, SinkUnavailableError),
        ("KMS.DisabledException", 400, SinkUnavailableError),
        ("KMS.NotFoundException", 400, SinkUnavailableError),
        ("NotImplemented", 501, SinkUnavailableError),  # a store without conditional writes
        ("403", 403, SinkUnavailableError),  # HEAD answers carry only the status
        ("404", 404, SinkUnavailableError),
        # transient: retry with backoff, attempts charged
        ("InternalError", 500, RetryableSinkError),
        ("ServiceUnavailable", 503, RetryableSinkError),
        ("SlowDown", 503, RetryableSinkError),
        ("Throttling", 400, RetryableSinkError),
        ("RequestTimeout", 400, RetryableSinkError),
        ("OperationAborted", 409, RetryableSinkError),
        ("ConditionalRequestConflict", 409, RetryableSinkError),
        ("BadDigest", 400, RetryableSinkError),
        ("NoSuchUpload", 404, RetryableSinkError),
        ("SomethingNew", 502, RetryableSinkError),
        ("TooManyRequests", 429, RetryableSinkError),
        ("SomethingNew", 400, RetryableSinkError),  # unknown 4xx: charged, ends dead
        # this object can never be stored
        ("EntityTooLarge", 400, PermanentSinkError),
        ("EntityTooSmall", 400, PermanentSinkError),
        ("InvalidDigest", 400, PermanentSinkError),
        ("KeyTooLongError", 400, PermanentSinkError),
        ("MetadataTooLarge", 400, PermanentSinkError),
        ("MalformedXML", 400, PermanentSinkError),
    ],
)
def test_client_errors_map_by_code_then_status(
    code: str, status: int, expected: type[SinkError]
) -> None:
    """Each S3 error code (or bare status) maps to the class the dispatcher needs."""
    mapped = map_boto_error(client_error(code, status), "put_object")
    assert type(mapped) is expected
    assert code in str(mapped)
    assert "put_object" in str(mapped)


@pytest.mark.parametrize(
    ("code", "status", "words"),
    [
        ("404", 404, "the bucket does not exist"),
        ("NoSuchBucket", 404, "the bucket does not exist"),
        ("403", 403, "access to the bucket is denied"),
    ],
)
def test_a_missing_or_forbidden_bucket_is_named(code: str, status: int, words: str) -> None:
    """HeadBucket answers carry only a status: a 404 says the bucket is missing, a 403 that
    access is denied (what check-config --probe and /readyz show)."""
    mapped = map_boto_error(client_error(code, status), "head_bucket")
    assert type(mapped) is SinkUnavailableError
    assert words in str(mapped)


def test_client_error_messages_are_not_echoed() -> None:
    """S3's message text (which may quote request data) stays out of our error."""
    mapped = map_boto_error(client_error("AccessDenied", 403, "key=AKIASECRET123"))
    assert "AKIASECRET123" not in str(mapped)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (bce.EndpointConnectionError(endpoint_url="http://x"), SinkUnavailableError),
        (bce.ConnectTimeoutError(endpoint_url="http://x"), SinkUnavailableError),
        (bce.ProxyConnectionError(proxy_url="http://p"), SinkUnavailableError),
        (bce.SSLError(endpoint_url="https://x", error="bad cert"), SinkUnavailableError),
        (bce.NoCredentialsError(), SinkUnavailableError),
        (bce.PartialCredentialsError(provider="env", cred_var="X"), SinkUnavailableError),
        (bce.CredentialRetrievalError(provider="sso", error_msg="expired"), SinkUnavailableError),
        (bce.NoRegionError(), SinkUnavailableError),
        (bce.ReadTimeoutError(endpoint_url="http://x"), RetryableSinkError),
        (bce.ConnectionClosedError(endpoint_url="http://x"), RetryableSinkError),
        (bce.ResponseStreamingError(error="reset"), RetryableSinkError),
        (bce.IncompleteReadError(actual_bytes=1, expected_bytes=2), RetryableSinkError),
        (bce.ParamValidationError(report="bad"), PermanentSinkError),
        (RuntimeError("anything else"), RetryableSinkError),
    ],
)
def test_botocore_errors_map_to_sink_errors(exc: Exception, expected: type[SinkError]) -> None:
    """Connection, credential, timeout and validation errors each map to one class."""
    assert type(map_boto_error(exc, "get_object")) is expected


def test_sink_errors_pass_through() -> None:
    """An error already ours is returned as is."""
    ours = PermanentSinkError("x")
    assert map_boto_error(ours) is ours


def test_unreachable_endpoint_is_unavailable_through_the_real_client() -> None:
    """A refused connection through boto3 itself arrives as SinkUnavailableError."""
    from tests.harness import free_port

    api = S3Api(
        S3Settings(
            bucket="b",
            region="us-east-1",
            endpoint_url=f"http://127.0.0.1:{free_port()}",
            access_key_id="a",
            secret_access_key="s",
            connect_timeout=1.0,
        )
    )
    with pytest.raises(SinkUnavailableError, match="unreachable"):
        api.head_bucket()


def test_settings_repr_hides_credentials() -> None:
    """Client settings never print their credentials."""
    text = repr(S3Settings(bucket="b", access_key_id="AKIA1", secret_access_key="sekrit"))
    assert "AKIA1" not in text
    assert "sekrit" not in text
