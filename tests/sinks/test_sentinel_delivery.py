"""Delivery's pipeline without a network: the calls a batch becomes, encoded one ahead
of the call in flight, and what a failure mid-batch leaves to the dispatcher."""

from __future__ import annotations

import dataclasses
import gzip
import json
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar, cast

import pytest
from pydantic import SecretStr

from sinks.base import Event, PermanentSinkError, SinkUnavailableError
from sinks.sentinel import SentinelConfig
from sinks.sentinel._client import IngestionApi
from sinks.sentinel._delivery import Delivery
from sinks.sentinel.encoder import plan_calls, row_for
from tests.fakes.azure import CLIENT_ID, CLIENT_SECRET, DCR_ID, TENANT_ID
from tests.fakes.hec import make_event
from tests.sinks.sentinel_support import decisions, rule_changes

P = ParamSpec("P")
T = TypeVar("T")


class Api:
    """Records each call's stream and EventIds; fails the ``fail_at``-th call (1-based)."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.fail_at = fail_at
        self.threads: set[str] = set()

    def post(self, stream: str, body: bytes) -> None:
        self.threads.add(threading.current_thread().name)
        if self.fail_at is not None and len(self.calls) + 1 == self.fail_at:
            raise SinkUnavailableError("throttled", retry_after=5.0)
        rows = json.loads(gzip.decompress(body))
        self.calls.append((stream, [row["EventId"] for row in rows]))


def config(**extra: Any) -> SentinelConfig:
    return SentinelConfig(
        name="sentinel",
        type="sentinel",
        endpoint="https://127.0.0.1:1",
        dcr_immutable_id=DCR_ID,
        tenant_id=TENANT_ID,
        client_id=CLIENT_ID,
        client_secret=SecretStr(CLIENT_SECRET),
        **extra,
    )


def mixed_batch() -> list[Event]:
    """Several calls per stream, the streams interleaved, a row too big, a body not JSON."""
    events = decisions(40, note="n" * 300) + rule_changes(15, start=40) + decisions(30, start=55)
    events[7] = make_event(7, note="n" * 5000)
    events[20] = dataclasses.replace(events[20], body=b"not json")
    return events


def deliver(events: list[Event], api: Api, *, pipelined: bool, **extra: Any) -> Delivery:
    cfg = config(**extra)
    with ThreadPoolExecutor(1, thread_name_prefix="rows") as encoder:
        delivery = Delivery(cast(IngestionApi, api), cfg, events, encoder if pipelined else None)
        delivery.run()
    return delivery


@pytest.mark.parametrize("pipelined", [False, True])
def test_calls_are_those_planned_on_the_whole_batch(pipelined: bool) -> None:
    """Each stream's rows go in order, packed as plan_calls packs them; every row once."""
    events = mixed_batch()
    api = Api()
    delivery = deliver(events, api, pipelined=pipelined, max_call_bytes=4096)
    streams = config().streams.model_dump()
    expected: set[tuple[str, tuple[str, ...]]] = set()
    too_big: list[str] = []
    for stream in {row_for(e, streams).stream for i, e in enumerate(events) if i != 20}:
        mine = [e for i, e in enumerate(events) if i != 20 and row_for(e, streams).stream == stream]
        calls, oversize = plan_calls([row_for(e, streams).data for e in mine], 4096)
        too_big += [mine[i].event_id for i in oversize]
        expected |= {(stream, tuple(mine[i].event_id for i in call)) for call in calls}
    assert too_big == ["evt-7"]
    assert {(s, tuple(ids)) for s, ids in api.calls} == expected
    assert len(api.calls) == len(expected) > 2
    for stream in {s for s, _ in api.calls}:
        sent = [i for s, ids in api.calls if s == stream for i in ids]
        assert sent == sorted(sent, key=lambda i: int(i.split("-")[1])), "in order per stream"
    assert set(delivery.failures) == {7, 20}
    assert all(isinstance(e, PermanentSinkError) for e in delivery.failures.values())
    assert delivery.done == set(range(len(events))) - {7, 20}


@pytest.mark.parametrize("pipelined", [False, True])
def test_a_hold_mid_batch_falls_on_every_row_not_acknowledged(pipelined: bool) -> None:
    """429 on the second call: rows the service took stay done, every other row - built
    or not yet - carries the hold, and the encoder is left idle."""
    events = decisions(60, note="n" * 300)
    api = Api(fail_at=2)
    delivery = deliver(events, api, pipelined=pipelined, max_call_bytes=4096)
    assert len(api.calls) == 1
    taken = {int(i.split("-")[1]) for i in api.calls[0][1]}
    assert delivery.done == taken
    assert set(delivery.failures) == set(range(60)) - taken
    assert {type(e) for e in delivery.failures.values()} == {SinkUnavailableError}


class CountingExecutor(ThreadPoolExecutor):
    """Counts what is submitted to it."""

    submitted = 0

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def test_pipelined_encodes_on_the_encoder_and_posts_from_the_caller() -> None:
    """The calls after the first are encoded on the encoder thread while the one before is
    in flight; the POST stays on the caller's thread."""
    api = Api()
    events = decisions(30, note="n" * 300)
    with CountingExecutor(1) as encoder:
        Delivery(cast(IngestionApi, api), config(max_call_bytes=4096), events, encoder).run()
    assert api.threads == {threading.current_thread().name}
    assert len(api.calls) > 1
    assert encoder.submitted == len(api.calls), "every call after the first, and the end"
