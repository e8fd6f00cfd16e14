"""A store that ignores conditional writes (If-None-Match) is noticed at start: the sink
refuses it unless ``allow_unconditional_writes`` accepts the risk."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from sinks import SinkUnavailableError
from sinks.s3 import S3Sink, verify_archive
from sinks.s3._client import api_for
from tests.fakes.s3_unconditional import UnconditionalS3, unconditional_s3
from tests.services.moto import MotoServer, moto_server, s3_bucket
from tests.sinks.s3_support import data_keys, keypair, make_event, s3_config

pytestmark = pytest.mark.integration
KEYS = keypair()


def test_start_refuses_a_store_that_ignores_if_none_match(
    unconditional_s3: UnconditionalS3, moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """Start fails (unavailable, nothing charged) naming the missing conditional writes;
    health says the same; no event is written."""
    bucket = s3_bucket()
    sink = S3Sink(s3_config(unconditional_s3.endpoint, bucket, KEYS))

    async def go() -> str:
        with pytest.raises(SinkUnavailableError, match="does not honour conditional writes"):
            await sink.start()
        health = await sink.health()
        assert not health.ok
        await sink.close()
        return health.detail

    detail = asyncio.run(go())
    assert "allow_unconditional_writes" in detail
    assert unconditional_s3.dropped >= 2
    assert data_keys(moto_server.client(), bucket) == []


def test_the_same_bucket_through_a_conditional_store_passes(
    moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """On moto itself (which answers 412) the first start creates the marker, then the
    second conditional PUT is refused: the check passes, on a fresh and on an old prefix."""
    bucket = s3_bucket()
    cfg = s3_config(moto_server, bucket, KEYS)

    async def twice() -> None:
        for _ in range(2):
            sink = S3Sink(cfg)
            await sink.start()
            assert (await sink.health()).ok
            await sink.close()

    asyncio.run(twice())


def test_allow_unconditional_writes_accepts_the_store_with_a_warning(
    unconditional_s3: UnconditionalS3, moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """With the setting the sink starts, says what it accepted, and archives."""
    bucket = s3_bucket()
    cfg = s3_config(unconditional_s3.endpoint, bucket, KEYS, allow_unconditional_writes=True)
    sink = S3Sink(cfg)

    async def go() -> None:
        await sink.start()
        await sink.send([make_event(1), make_event(2)])
        assert (await sink.health()).ok
        await sink.close()

    with capture_logs() as logs:
        asyncio.run(go())
    assert [e for e in logs if e["event"] == "s3_unconditional_writes_accepted"]
    assert len(data_keys(moto_server.client(), bucket)) == 1
    report = verify_archive(
        api_for(s3_config(moto_server, bucket, KEYS)),
        prefix=cfg.prefix,
        public_key=KEYS.private.public_key(),
    )
    assert report.findings == ()
