"""Service start-up behaviour."""

from __future__ import annotations

import asyncio
from pathlib import Path

from receiver.service import Service
from receiver.settings import load_settings
from receiver.store import Route, SQLiteStore
from tests.harness import base_config, stored_event


def test_events_of_a_removed_sink_become_dead_letters(tmp_path: Path) -> None:
    """A sink dropped from the config leaves visible dead letters, not a cursor holding
    its events forever."""

    async def go() -> None:
        store = SQLiteStore(tmp_path / "spool.db")
        await store.open()
        await store.ensure_cursors([Route("retired", ("rule.*",))])
        await store.ingest(stored_event("e1", event_type="rule.x", sinks=("retired",)))
        await store.ingest(stored_event("e2", event_type="decision.x", sinks=("retired",)))
        await store.close()
        service = Service(load_settings(data=base_config(tmp_path)))
        await service.start()
        try:
            dead = await service.store.dead_letters(sink="retired")
            assert [(d.event_id, d.error) for d in dead] == [
                ("e1", "sink 'retired' is not configured")
            ]
            assert "retired" not in await service.store.cursor_sinks()
        finally:
            await service.stop()

    asyncio.run(go())
