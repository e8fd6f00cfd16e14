"""``check-config --probe``: connect to each configured destination once and report.

Each sink is built as ``serve`` builds it, started (which connects: Kafka bootstraps
and logs in, S3 checks the bucket, write access and conditional writes), asked for its
``health()`` once (what ``/readyz`` shows), and closed. Sinks are probed side by side,
each within a time limit, and reported in configuration order with the reason of any
failure, in the sink's own words: a refused SASL login, a token HEC does not know, a
missing bucket, a store without conditional writes. No event is sent anywhere (the S3
sink writes its marker object once on a new prefix, as the first ``serve`` would).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from sinks import Sink, SinkConfig, build_sink

__all__ = ["ProbeResult", "probe_sinks"]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one sink's probe found."""

    name: str
    type: str
    ok: bool
    detail: str

    def line(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        return f"probe {self.name} ({self.type}): {verdict}" + (
            f": {self.detail}" if self.detail else ""
        )


async def _start_and_check(sink: Sink) -> tuple[bool, str]:
    try:
        await sink.start()
    except Exception as exc:
        return False, f"start failed: {exc or type(exc).__name__}"
    health = await sink.health()
    return health.ok, health.detail


async def _probe(config: SinkConfig, timeout: float) -> ProbeResult:
    def result(ok: bool, detail: str) -> ProbeResult:
        # One line: a reason with line breaks would break the report.
        return ProbeResult(config.name, config.type, ok, " ".join(detail.split())[:500])

    try:
        sink = build_sink(config)
    except Exception as exc:  # a plug-in that cannot even be built
        return result(False, f"cannot build the sink: {type(exc).__name__}: {exc}")
    try:
        return result(*await asyncio.wait_for(_start_and_check(sink), timeout))
    except asyncio.TimeoutError:
        return result(False, f"no answer within {timeout:g} s")
    except Exception as exc:  # a health() that raises instead of answering
        return result(False, f"health check failed: {type(exc).__name__}: {exc}")
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sink.close(), 10)


async def probe_sinks(configs: Sequence[SinkConfig], timeout: float) -> list[ProbeResult]:
    """Probe every sink (concurrently); results in the order of ``configs``."""
    return list(await asyncio.gather(*(_probe(c, timeout) for c in configs)))
