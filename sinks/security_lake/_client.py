"""S3 through the provider role: STS AssumeRole with the external id, renewed in time.

Security Lake creates, per custom source, an IAM role that the source's writer assumes
with an external id; every write goes through that role's temporary credentials. The
S3 calls themselves are the S3 sink's (``sinks.s3._client.S3Api``, one error map for
both sinks); this module only obtains and renews the credentials. Blocking.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sinks.base import PermanentSinkError
from sinks.s3._client import S3Api, S3Settings, map_boto_error
from sinks.security_lake.config import INSTALL_HINT, SecurityLakeConfig

__all__ = ["AssumedRole", "LakeClient", "assume_role"]

RENEW_BEFORE_SECONDS = 300.0  # renew 5 minutes before expiry: no call starts on stale keys


@dataclass(frozen=True, slots=True)
class AssumedRole:
    """Temporary credentials of the provider role (never in a repr, never logged)."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expires_at: float


def _plain(value: object) -> str | None:
    secret = getattr(value, "get_secret_value", None)
    return str(secret()) if secret is not None else None


def assume_role(config: SecurityLakeConfig, role_arn: str) -> AssumedRole:
    """STS AssumeRole(role_arn, external id) with the base credentials.

    Raises:
        SinkUnavailableError: STS unreachable, or the role / external id refused.
        RetryableSinkError: a transient STS answer (throttling, 5xx).
        PermanentSinkError: boto3 is not installed.
    """
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise PermanentSinkError(INSTALL_HINT) from exc
    try:
        sts: Any = boto3.session.Session().client(
            "sts",
            region_name=config.region,
            endpoint_url=config.sts_endpoint_url,
            aws_access_key_id=_plain(config.access_key_id),
            aws_secret_access_key=_plain(config.secret_access_key),
            aws_session_token=_plain(config.session_token),
            config=Config(
                connect_timeout=config.connect_timeout_seconds,
                read_timeout=config.read_timeout_seconds,
                retries={"mode": "standard", "total_max_attempts": 3},
            ),
        )
        answer = sts.assume_role(
            RoleArn=role_arn,
            RoleSessionName=config.role_session_name,
            ExternalId=config.external_id.get_secret_value(),
            DurationSeconds=config.role_duration_seconds,
        )
        credentials = answer["Credentials"]
        expiration = credentials["Expiration"]
    except Exception as exc:
        raise map_boto_error(exc, "sts:AssumeRole") from exc
    expires = expiration.timestamp() if isinstance(expiration, datetime) else 0.0
    return AssumedRole(
        credentials["AccessKeyId"],
        credentials["SecretAccessKey"],
        credentials["SessionToken"],
        expires,
    )


class LakeClient:
    """An ``S3Api`` on the lake bucket with one role's credentials, renewed before expiry."""

    def __init__(
        self,
        config: SecurityLakeConfig,
        role_arn: str,
        *,
        clock: Callable[[], float],
        assume: Callable[[SecurityLakeConfig, str], AssumedRole] = assume_role,
    ) -> None:
        self.config = config
        self.role_arn = role_arn
        self.clock = clock
        self._assume = assume
        self._api: S3Api | None = None
        self._expires_at = 0.0

    def api(self) -> S3Api:
        """The current client; assumes the role again when the credentials near expiry.

        Raises:
            SinkError: as ``assume_role``, or building the S3 client failed.
        """
        if self._api is None or self.clock() >= self._expires_at - RENEW_BEFORE_SECONDS:
            role = self._assume(self.config, self.role_arn)
            cfg = self.config
            self._api = S3Api(
                S3Settings(
                    bucket=cfg.bucket,
                    region=cfg.region,
                    endpoint_url=cfg.endpoint_url,
                    access_key_id=role.access_key_id,
                    secret_access_key=role.secret_access_key,
                    session_token=role.session_token,
                    connect_timeout=cfg.connect_timeout_seconds,
                    read_timeout=cfg.read_timeout_seconds,
                )
            )
            self._expires_at = role.expires_at
        return self._api
