"""The blocking Azure side: the only module that talks to ``azure-monitor-ingestion`` and
``azure-identity``, and the one place where their errors become sink errors.

Every method blocks; the sink calls them from its own worker threads. The client's own
retry policy is off (``retry_total=0``): the dispatcher owns retries, and a 429 must
reach it with its ``Retry-After``. Tokens are cached and refreshed by azure-identity;
after a 401 from the endpoint, or a refused token request, the credential is rebuilt (a
revoked token is not reused; a rotated token file is read again). No token, secret or body is ever put in an error message or a log line.

Error map (``map_error``), by what the dispatcher should do next:

- Entra ID refuses the credential (wrong secret or certificate, unknown app or tenant,
  no federated identity record): ``SinkUnavailableError`` "no token from Entra ID ..."
  with the AADSTS code and what it means; the credential is unavailable (no managed identity here, token file
  missing) or Entra ID is unreachable: ``SinkUnavailableError``;
- the endpoint answers 401 (token expired, revoked, other audience):
  ``SinkUnavailableError``, credential rebuilt; 403 "does not have access to ingest data
  for the data collection rule": ``SinkUnavailableError`` naming the missing role
  assignment; 404 (no such DCR or stream): ``SinkUnavailableError``;
- 429 / 503: ``SinkUnavailableError`` carrying ``retry_after`` (nothing charged);
- 413: ``CallTooLargeError`` (the sink splits the call); 400: ``RecordsRefusedError``
  (the sink bisects to find the record);
- other 5xx, a connection cut after the request went out: ``RetryableSinkError``
  (the rows may have been ingested: a repeat is possible, and EventId tells it);
- the endpoint unreachable (refused, DNS, TLS verification): ``SinkUnavailableError``.
"""

from __future__ import annotations

import contextlib
import email.utils
import io
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from sinks.base import PermanentSinkError, RetryableSinkError, SinkError, SinkUnavailableError
from sinks.sentinel.config import INSTALL_HINT, SentinelConfig

__all__ = [
    "CallTooLargeError",
    "IngestionApi",
    "RecordsRefusedError",
    "TokenError",
    "map_error",
    "retry_after_seconds",
]

ROLE_NAME = "Monitoring Metrics Publisher"
_AADSTS = re.compile(r"AADSTS\d+")
_OAUTH_ERROR = re.compile(r"\((invalid_\w+|unauthorized_client|unsupported_\w+)\)")
_NO_ROLE = "does not have access to ingest data"


class CallTooLargeError(PermanentSinkError):
    """HTTP 413: the call is over the API's size limit; split it."""


class RecordsRefusedError(PermanentSinkError):
    """HTTP 400: the service refused the call's records; one of them may be at fault.

    Args:
        code: the service's error code (never its message, which may quote a record).
    """

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class TokenError(Exception):
    """Getting a token failed; ``__cause__`` is azure-identity's error."""


class _Credential:
    """The azure-identity credential, with its failures marked as token failures.

    The ingestion client asks for tokens inside its pipeline; this is how the error map
    tells "Entra ID refused us" from "the endpoint refused the token".
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        try:
            return self.inner.get_token(*scopes, **kwargs)
        except Exception as exc:
            raise TokenError(type(exc).__name__) from exc

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


def build_credential(config: SentinelConfig) -> Any:
    """The azure-identity credential the config asks for (no I/O until a token is needed).

    Raises:
        PermanentSinkError: the Azure SDK is not installed.
    """
    try:
        from azure import identity
    except ImportError as exc:
        raise PermanentSinkError(INSTALL_HINT) from exc
    common: dict[str, Any] = {
        "connection_timeout": config.connect_timeout_seconds,
        "read_timeout": config.read_timeout_seconds,
    }
    if config.ca_file:
        common["connection_verify"] = config.ca_file
    if config.credential == "managed_identity":
        return identity.ManagedIdentityCredential(client_id=config.client_id, **common)
    common["authority"] = config.authority_host
    if not config.validate_authority:
        common["disable_instance_discovery"] = True
    tenant, client = str(config.tenant_id), str(config.client_id)
    if config.credential == "client_secret" and config.client_secret is not None:
        secret = config.client_secret.get_secret_value()
        return identity.ClientSecretCredential(tenant, client, secret, **common)
    if config.credential == "certificate" and config.certificate is not None:
        password = config.certificate_password
        return identity.CertificateCredential(
            tenant,
            client,
            certificate_data=config.certificate.get_secret_value().encode(),
            password=password.get_secret_value().encode() if password is not None else None,
            **common,
        )
    return identity.WorkloadIdentityCredential(
        tenant_id=tenant,
        client_id=client,
        token_file_path=str(config.federated_token_file),
        **common,
    )


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The wait a 429 / 503 asks for: ``retry-after-ms``, ``x-ms-retry-after-ms`` or
    ``Retry-After`` (seconds or an HTTP date). ``None`` when absent or unreadable."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        value = lowered.get(name)
        if value is not None:
            try:
                return max(0.0, float(value) / 1000)
            except ValueError:
                pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def _token_error(cause: BaseException | None, config: SentinelConfig) -> SinkError:
    from azure.core.exceptions import ServiceRequestError
    from azure.identity import CredentialUnavailableError

    who = f"client id {config.client_id}" if config.client_id else "the managed identity"
    text = str(cause or "")
    if isinstance(cause, CredentialUnavailableError):
        return SinkUnavailableError(
            f"credential unavailable ({config.credential}): {text.splitlines()[0][:200] if text else ''}"
        )
    if isinstance(cause, ServiceRequestError):
        return SinkUnavailableError(
            f"Entra ID ({config.authority_host}) unreachable: {type(cause).__name__}"
        )
    codes = _AADSTS.findall(text)
    oauth = _OAUTH_ERROR.search(text)
    reason = " ".join(
        part for part in ((oauth.group(1) if oauth else ""), (codes[0] if codes else "")) if part
    )
    hint = {
        "AADSTS7000215": "the client secret is wrong or expired",
        "AADSTS7000222": "the client secret has expired",
        "AADSTS700016": "no such application in this tenant",
        "AADSTS90002": "no such tenant",
        "AADSTS700027": "the certificate is not registered on the application",
        "AADSTS70021": "no federated identity credential matches the service account token",
        "AADSTS700024": "the client assertion is outside its valid time range",
    }.get(codes[0] if codes else "", "")
    if not hint:
        # No AADSTS code we know: azure-identity's first line (it never holds the secret).
        hint = text.splitlines()[0][:200] if text else "see the Entra ID documentation"
    return SinkUnavailableError(
        f"no token from Entra ID for {who} ({reason or type(cause).__name__}): {hint}"
    )


def _http_error(exc: Any, config: SentinelConfig) -> SinkError:
    status = int(getattr(exc, "status_code", None) or 0)
    error = getattr(exc, "error", None)
    code = str(getattr(error, "code", "") or "")
    message = str(getattr(error, "message", "") or "")
    response = getattr(exc, "response", None)
    headers: Mapping[str, str] = getattr(response, "headers", None) or {}
    what = f"HTTP {status}{' ' + code if code else ''}"
    dcr = config.dcr_immutable_id
    if status == 413:
        return CallTooLargeError(f"the call is over the API's size limit ({what})")
    if status == 400:
        return RecordsRefusedError(f"the service refused the records ({what})", code)
    if status == 401:
        return SinkUnavailableError(
            f"the endpoint refused the access token ({what}): expired, revoked, or issued for "
            "another audience; a new token is requested on the next attempt"
        )
    if status == 403 and (_NO_ROLE in message or code == "OperationFailed"):
        who = f"client id {config.client_id}" if config.client_id else "the managed identity"
        return SinkUnavailableError(
            f"role assignment missing ({what}): the token for {who} is valid but has no "
            f"'{ROLE_NAME}' role on data collection rule {dcr}; assign it on the DCR "
            "(deploy/sentinel/) and allow up to 30 minutes to take effect"
        )
    if status == 403:
        return SinkUnavailableError(f"the endpoint refuses us ({what}): check its network access")
    if status == 404:
        return SinkUnavailableError(
            f"not found ({what}): check endpoint, dcr_immutable_id {dcr} and the stream names "
            "against the DCR's stream declarations"
        )
    if status in (429, 503):
        wait = retry_after_seconds(headers)
        label = "throttled" if status == 429 else "service unavailable"
        after = f"; retry after {wait:g}s" if wait is not None else ""
        return SinkUnavailableError(f"{label} ({what}){after}", retry_after=wait)
    return RetryableSinkError(f"the endpoint answered {what}")


def map_error(exc: BaseException, config: SentinelConfig) -> SinkError:
    """The sink error for anything raised while posting to (or probing) the endpoint.

    Never raises; unknown exceptions become ``RetryableSinkError`` (charged, so they end
    as dead letters rather than loop forever).
    """
    if isinstance(exc, SinkError):
        return exc
    if isinstance(exc, TokenError):
        return _token_error(exc.__cause__, config)
    from azure.core import exceptions as ace

    if isinstance(exc, ace.HttpResponseError) and getattr(exc, "status_code", None):
        return _http_error(exc, config)
    if isinstance(exc, ace.ServiceRequestError):
        return SinkUnavailableError(
            f"the endpoint is unreachable ({type(exc).__name__}): nothing was sent"
        )
    if isinstance(exc, ace.ServiceResponseError):
        return RetryableSinkError(
            f"no answer from the endpoint ({type(exc).__name__}): the rows may have been "
            "ingested; a repeat is possible (EventId tells it)"
        )
    return RetryableSinkError(f"unexpected {type(exc).__name__} while posting")


class IngestionApi:
    """One ``LogsIngestionClient`` and its credential, rebuilt after a 401 or a token refusal."""

    def __init__(self, config: SentinelConfig) -> None:
        try:
            from azure.monitor.ingestion import LogsIngestionClient
        except ImportError as exc:
            raise PermanentSinkError(INSTALL_HINT) from exc
        self._client_class = LogsIngestionClient
        self.config = config
        self._lock = threading.Lock()
        self._credential, self._client = self._build()

    def _build(self) -> tuple[_Credential, Any]:
        credential = _Credential(build_credential(self.config))
        kwargs: dict[str, Any] = {
            "credential_scopes": [self.config.scope],
            "retry_total": 0,  # the dispatcher retries; a 429 must reach it with Retry-After
            "connection_timeout": self.config.connect_timeout_seconds,
            "read_timeout": self.config.read_timeout_seconds,
            "logging_enable": False,
        }
        if self.config.ca_file:
            kwargs["connection_verify"] = self.config.ca_file
        return credential, self._client_class(self.config.endpoint, credential, **kwargs)

    def reset(self) -> None:
        """Drop the credential and its cached token; the next call gets a new one."""
        credential, client = self._build()
        with self._lock:
            old = self._credential, self._client
            self._credential, self._client = credential, client
        _close_quietly(*old)

    def post(self, stream: str, body: bytes) -> None:
        """POST one gzip JSON array to ``stream``; return once the service said 204.

        Raises:
            SinkError: as ``map_error`` maps what went wrong.
        """
        with self._lock:
            client = self._client
        try:
            client.upload(self.config.dcr_immutable_id, stream, io.BytesIO(body))
        except Exception as exc:
            error = map_error(exc, self.config)
            if isinstance(exc, TokenError) or getattr(exc, "status_code", None) == 401:
                # A fresh credential: no cached token, and a workload identity token file
                # read again (azure-identity otherwise keeps its content for 10 minutes).
                self.reset()
            raise error from None

    def token(self) -> None:
        """Get a token (from the cache while it is fresh).

        Raises:
            SinkUnavailableError: Entra ID refused or could not be reached.
        """
        with self._lock:
            credential = self._credential
        try:
            credential.get_token(self.config.scope)
        except Exception as exc:
            error = map_error(exc, self.config)
            self.reset()  # as after a refused token in a call: start from a fresh credential
            raise error from None

    def close(self) -> None:
        with self._lock:
            old = self._credential, self._client
        _close_quietly(*old)


def _close_quietly(credential: _Credential, client: Any) -> None:
    for closer in (client.close, credential.close):
        with contextlib.suppress(Exception):  # best effort: nothing is pending on them
            closer()
