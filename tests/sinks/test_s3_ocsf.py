"""The S3 archive with ``encoding = "ocsf"``: OCSF lines, same exactly-once and chain."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import pytest

from sinks.ocsf import Mapper, OcsfMapping
from sinks.s3.encoder import Partition, encode_object
from tests.services.moto import MotoServer, moto_server, s3_bucket
from tests.sinks.ocsf_validator import assert_valid
from tests.sinks.s3_support import archived, data_keys, make_event, s3_config
from tests.sinks.test_s3_sink import KEYS, deliver, verified

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("version", ["1.1.0", "1.8.0"])
def test_ocsf_lines_are_archived_once_and_chained(
    moto_server: MotoServer, s3_bucket: Callable[..., str], version: str
) -> None:
    """Each line is a valid OCSF record; a retried, larger batch adds only the new events."""
    bucket = s3_bucket()
    cfg = s3_config(moto_server, bucket, KEYS, encoding="ocsf", ocsf_version=version)
    first = [make_event(i, decision="blocked") for i in range(1, 4)]
    asyncio.run(deliver(cfg, first))
    asyncio.run(deliver(cfg, [*first, make_event(4, "rule.patch_applied")]))  # a new process
    lines = [line for _, line in archived(moto_server.client(), bucket)]
    for line in lines:
        assert_valid(line, version)
    assert Counter(line["metadata"]["sequence"] for line in lines) == Counter([1, 2, 3, 4])
    assert {line["class_uid"] for line in lines} == {6003, 3004}
    verified(cfg)


def test_ocsf_object_left_by_a_crash_is_adopted(
    moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """An unchained OCSF object written before a crash is read back and chained."""
    bucket = s3_bucket()
    cfg = s3_config(moto_server, bucket, KEYS, encoding="ocsf")
    batch = [make_event(i) for i in range(1, 4)]
    mapper = Mapper(OcsfMapping(), cfg.ocsf_version)
    orphan = encode_object(
        "audit/",
        Partition("decision", "2026-11-24", "08"),
        batch,
        line=lambda e: mapper.map(e).json(),
    )
    moto_server.client().put_object(Bucket=bucket, Key=orphan.key, Body=orphan.data)
    asyncio.run(deliver(cfg, [*batch, make_event(4)]))
    keys = data_keys(moto_server.client(), bucket)
    assert orphan.key in keys
    assert len(keys) == 2
    verified(cfg)
