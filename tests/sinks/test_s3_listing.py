"""How often the S3 sink lists a partition: once per partition after open or after a
failed write, never per batch; re-sent events are still archived exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import pytest

from sinks import Event, RetryableSinkError
from sinks.s3 import S3Config, S3Sink, verify_archive
from sinks.s3._client import S3Api, api_for
from tests.services.moto import MotoServer, moto_server, s3_bucket
from tests.sinks.s3_support import archived, data_keys, keypair, make_event, s3_config

pytestmark = pytest.mark.integration
T = TypeVar("T")
KEYS = keypair()
PARTITION = "audit/decision/dt=2026-11-24/hour=08/"


class CountingApi(S3Api):
    """The real client, counting the listings of data partitions (our own seam).

    ``lose_answer_of`` names data PUTs (1 = the first) that reach S3 but whose answer
    is lost: the object is stored and the caller gets a retryable error.
    """

    def __init__(self, config: S3Config, lose_answer_of: Sequence[int] = ()) -> None:
        real = api_for(config)
        self.__dict__.update(real.__dict__)
        self.listings: list[int] = []  # keys returned per listing of a data partition
        self.data_puts = 0
        self.lose_answer_of = set(lose_answer_of)

    def keys(self, prefix: str, *, limit: int | None = None) -> Iterator[str]:
        found = list(super().keys(prefix, limit=limit))
        if "/dt=" in prefix:
            self.listings.append(len(found))
        return iter(found)

    def put_new(self, key: str, data: bytes, **extra: Any) -> bool:
        written = super().put_new(key, data, **extra)
        if key.endswith(".ndjson.gz"):
            self.data_puts += 1
            if self.data_puts in self.lose_answer_of:
                raise RetryableSinkError("S3 put_object: ReadTimeoutError (answer lost)")
        return written


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def process(cfg: S3Config, apis: list[CountingApi], lose_answer_of: Sequence[int] = ()) -> S3Sink:
    """A sink as one process lifetime builds it; its client is appended to ``apis``."""

    def factory(config: S3Config) -> S3Api:
        api = CountingApi(config, lose_answer_of)
        apis.append(api)
        return api

    return S3Sink(cfg, api_factory=factory)


async def send_each(sink: S3Sink, batches: Sequence[Sequence[Event]]) -> list[int]:
    """Send every batch; return the number of partition listings each batch cost."""
    await sink.start()
    api = sink._writer.api if sink._writer is not None else None
    assert isinstance(api, CountingApi)
    costs = []
    try:
        for batch in batches:
            before = len(api.listings)
            await sink.send(batch)
            costs.append(len(api.listings) - before)
    finally:
        await sink.close()
    return costs


def once_each(moto: MotoServer, bucket: str, expected: set[int]) -> None:
    seqs = Counter(line["seq"] for _, line in archived(moto.client(), bucket))
    assert seqs == Counter(expected), "an event is missing or archived twice"


def verified(cfg: S3Config) -> None:
    report = verify_archive(api_for(cfg), prefix=cfg.prefix, public_key=KEYS.private.public_key())
    assert report.findings == ()


def test_list_calls_per_batch_stay_bounded_as_the_partition_grows(
    moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """40 batches into one hour partition: one listing at the first batch, none after;
    a restarted writer lists the 40 objects once, then again nothing per batch."""
    bucket = s3_bucket()
    cfg = s3_config(moto_server, bucket, KEYS)
    apis: list[CountingApi] = []
    first = [[make_event(5 * b + i) for i in range(5)] for b in range(40)]
    costs = run(send_each(process(cfg, apis), first))
    assert costs == [1] + [0] * 39
    assert apis[-1].listings == [0]  # the partition was empty when listed
    second = [[make_event(200 + 5 * b + i) for i in range(5)] for b in range(40)]
    costs = run(send_each(process(cfg, apis), second))
    assert costs == [1] + [0] * 39
    assert apis[-1].listings == [40]  # one listing of what the first process wrote
    assert len(data_keys(moto_server.client(), bucket)) == 80
    once_each(moto_server, bucket, set(range(400)))
    verified(cfg)


def test_events_re_sent_in_the_same_process_are_recognised_without_listing(
    moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """Recording an outcome failed, so the dispatcher sends events the sink already took,
    in larger or shifted batches: each event is archived once and nothing is listed again."""
    bucket = s3_bucket()
    cfg = s3_config(moto_server, bucket, KEYS)
    apis: list[CountingApi] = []
    events = [make_event(i) for i in range(13)]  # the same stored events each time
    batches = [
        events[1:6],
        events[1:11],  # 1-5 again, plus 6-10
        events[3:13],  # 3-10 again, plus 11-12
        events[1:13],  # all of them again: nothing new
    ]
    costs = run(send_each(process(cfg, apis), batches))
    assert costs == [1, 0, 0, 0]
    assert len(data_keys(moto_server.client(), bucket)) == 3
    once_each(moto_server, bucket, set(range(1, 13)))
    verified(cfg)


def test_a_put_whose_answer_was_lost_is_found_by_listing_after_the_failure(
    moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """The object reached S3 but the send failed: the next write into that partition lists
    it again, finds the object and writes only the events it does not hold."""
    bucket = s3_bucket()
    cfg = s3_config(moto_server, bucket, KEYS)
    apis: list[CountingApi] = []
    sink = process(cfg, apis, lose_answer_of=[1])
    events = [make_event(i) for i in range(10)]  # the same stored events each time

    async def go() -> list[int]:
        await sink.start()
        api = apis[-1]
        with pytest.raises(RetryableSinkError, match="answer lost"):
            await sink.send(events[1:6])
        listed = len(api.listings)
        await sink.send(events[1:8])
        await sink.send(events[8:10])
        await sink.close()
        return [listed, len(api.listings), *api.listings]

    first_listings, all_listings, *sizes = run(go())
    assert (first_listings, all_listings) == (1, 2)  # listed at open and after the failure
    assert sizes == [0, 1]  # the second listing found the object whose answer was lost
    assert len(data_keys(moto_server.client(), bucket)) == 3
    once_each(moto_server, bucket, set(range(1, 10)))
    verified(cfg)
