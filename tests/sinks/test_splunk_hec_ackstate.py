"""The ack state file: atomic, locked, survives a reopen, voids records on an ackId reset."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from sinks.splunk_hec._ackstate import AckState, AckStateLockedError


def _open(path: Path) -> AckState:
    state = AckState(path)
    assert state.open() == []
    return state


def test_new_state_gets_a_channel_and_survives_a_reopen(tmp_path: Path) -> None:
    """A GUID channel, pending and confirmed records and last_ack_id come back after close."""
    path = tmp_path / "sub" / "ack.json"
    state = _open(path)
    uuid.UUID(state.channel)
    state.accept(0, ["1:a", "2:b"], now=100.0)
    state.accept(1, ["3:c"], now=101.0)
    state.confirm({0}, now=102.0)
    state.save()
    state.close()

    again = _open(path)
    assert again.channel == state.channel
    assert again.last_ack_id == 1
    assert set(again.pending()) == {1}
    assert again.pending()[1].events == ("3:c",)
    assert again.confirmed_events() == {"1:a", "2:b"}
    again.close()


def test_save_replaces_the_file_atomically(tmp_path: Path) -> None:
    """No temp file is left behind and the file is always complete JSON."""
    path = tmp_path / "ack.json"
    state = _open(path)
    for i in range(20):
        state.accept(i, [f"{i}:e"], now=float(i))
        state.save()
        assert json.loads(path.read_text())["last_ack_id"] == i
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ack.json", "ack.json.lock"]
    state.close()


def test_a_second_process_cannot_use_the_same_file(tmp_path: Path) -> None:
    """flock: two sinks sharing a state file would confuse their channels."""
    path = tmp_path / "ack.json"
    first = _open(path)
    with pytest.raises(AckStateLockedError):
        AckState(path).open()
    first.close()
    _open(path).close()


def test_unreadable_state_is_moved_aside_with_a_warning(tmp_path: Path) -> None:
    """A corrupt file costs re-sends (duplicates), never a crash or a loss."""
    path = tmp_path / "ack.json"
    path.write_text('{"version": 1, "channel": "not-a-guid"')
    state = AckState(path)
    warnings = state.open()
    assert warnings
    assert "unreadable" in warnings[0]
    assert (tmp_path / "ack.json.corrupt").exists()
    uuid.UUID(state.channel)
    assert state.records == []
    state.close()


def test_an_ack_id_not_above_the_last_means_hec_forgot_the_channel(tmp_path: Path) -> None:
    """After a HEC restart ackIds start at 0 again: older unconfirmed records are void."""
    state = _open(tmp_path / "ack.json")
    state.accept(5, ["1:a"], now=1.0)
    state.accept(6, ["2:b"], now=1.0)
    state.confirm({5}, now=2.0)
    lost = state.accept(0, ["3:c"], now=3.0)
    assert [r.ack_id for r in lost] == [6]
    assert set(state.pending()) == {0}
    assert state.confirmed_events() == {"1:a"}  # confirmed stays confirmed
    state.close()


def test_prune_keeps_only_what_the_batch_still_needs(tmp_path: Path) -> None:
    """Records go once a batch without their events is sent (unconfirmed: after timeout)."""
    state = _open(tmp_path / "ack.json")
    state.accept(0, ["1:a"], now=0.0)
    state.confirm({0}, now=0.0)
    state.accept(1, ["2:b"], now=0.0)  # unconfirmed: kept until its ack timeout is over
    state.accept(2, ["3:c"], now=0.0)
    state.confirm({2}, now=0.0)
    assert state.prune(10.0, current={"3:c"}, ack_timeout=300) is True
    assert [r.ack_id for r in state.records] == [1, 2]
    assert state.prune(299.0, current={"3:c"}, ack_timeout=300) is False
    assert state.prune(300.0, current={"9:z"}, ack_timeout=300) is True
    assert state.records == []
    state.close()
