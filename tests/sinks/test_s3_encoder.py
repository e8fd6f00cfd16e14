"""The S3 sink's pure parts: partitions, archive lines, object keys, the manifest chain."""

from __future__ import annotations

import base64
import gzip
import itertools
import json
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from receiver import signatures
from sinks.s3.encoder import (
    Partition,
    archive_line,
    archive_record,
    decode_object,
    encode_object,
    event_time,
    object_name,
    parse_object_name,
    split_by_partition,
)
from sinks.s3.manifest import (
    GENESIS,
    ChainHead,
    EntryInfo,
    ManifestError,
    build_manifest,
    entry_hash,
    key_id,
    link_entries,
    load_private_key,
    load_public_key,
    manifest_key,
    open_manifest,
    sequence_of_key,
    sign_manifest,
)
from tests.harness import SECRET
from tests.sinks.s3_support import make_event

PART = Partition("decision", "2026-11-24", "08")


def test_event_time_prefers_occurred_at_and_falls_back_to_received_at() -> None:
    """occurred_at decides the partition; without a readable one, received_at does."""
    stated = make_event(1, occurred_at="2026-11-24T08:15:00.000+00:00", received_at=0.0)
    assert event_time(stated).isoformat() == "2026-11-24T08:15:00+00:00"
    for missing in (None, "not a time"):
        event = make_event(2, occurred_at=missing, received_at=1_700_000_000.5)
        assert event_time(event).isoformat() == "2023-11-14T22:13:20.500000+00:00"


def test_event_time_converts_offsets_to_utc() -> None:
    """A time with an offset lands in the UTC hour."""
    event = make_event(1, occurred_at="2026-11-24T01:30:00+02:00")
    assert split_by_partition([event]) == {Partition("decision", "2026-11-23", "23"): [0]}


def test_split_by_partition_groups_by_category_day_and_hour() -> None:
    """One group per (category, day, hour), positions in seq order, partitions sorted."""
    batch = [
        make_event(5, "decision_event.created", "2026-11-24T09:00:00.000+00:00"),
        make_event(3, "rule.patch_applied", "2026-11-24T08:59:59.999+00:00"),
        make_event(1, "decision_event.created", "2026-11-24T08:00:00.000+00:00"),
        make_event(2, "decision_event.created", "2026-11-24T08:30:00.000+00:00"),
        make_event(4, "unknown.kind", "2026-11-25T00:00:00.000+00:00"),
    ]
    assert split_by_partition(batch) == {
        Partition("decision", "2026-11-24", "08"): [2, 3],
        Partition("decision", "2026-11-24", "09"): [0],
        Partition("other", "2026-11-25", "00"): [4],
        Partition("rule", "2026-11-24", "08"): [1],
    }


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["decision_event.x", "rule.y", "approval.z", "misc"]),
            st.integers(0, 47),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_split_by_partition_places_every_event_once(spec: list[tuple[str, int]]) -> None:
    """Property: every position lands in exactly one partition, in seq order."""
    batch = [
        make_event(1000 - i, kind, f"2026-11-{24 + hour // 24}T{hour % 24:02d}:00:00.000+00:00")
        for i, (kind, hour) in enumerate(spec)
    ]
    groups = split_by_partition(batch)
    placed = sorted(p for positions in groups.values() for p in positions)
    assert placed == list(range(len(batch)))
    for positions in groups.values():
        assert [batch[p].seq for p in positions] == sorted(batch[p].seq for p in positions)


def test_partition_path_is_hive_style() -> None:
    """Keys carry dt= and hour= segments under the prefix and category."""
    assert PART.path("audit/") == "audit/decision/dt=2026-11-24/hour=08/"
    assert PART.path("") == "decision/dt=2026-11-24/hour=08/"


def test_archive_record_is_the_export_record_plus_proof() -> None:
    """Each line holds the export record, seq, id origin and the original proof."""
    event = make_event(7)
    record = archive_record(event)
    for key, value in event.export_record().items():
        assert record[key] == value
    assert record["seq"] == 7
    assert record["id_origin"] == "body.event_id"
    assert base64.b64decode(record["proof"]["body_b64"]) == event.body
    assert record["proof"]["signature"] == event.signature
    assert record["proof"]["timestamp"] == event.timestamp


def test_archived_proof_reverifies_with_the_webhook_secret() -> None:
    """An auditor holding the secret re-verifies the archived delivery byte for byte."""
    record = json.loads(archive_line(make_event(8)))
    proof = record["proof"]
    ts = signatures.verify(
        base64.b64decode(proof["body_b64"]),
        signature=proof["signature"],
        timestamp=proof["timestamp"],
        secrets=[SECRET.encode()],
        tolerance_seconds=10**9,  # archived long ago: only the MAC matters here
        now=lambda: float(proof["timestamp"]),
    )
    assert str(ts) == proof["timestamp"]


@settings(max_examples=80, deadline=None)
@given(
    event_id=st.text(min_size=1, max_size=30),
    source=st.text(min_size=1, max_size=10),
    delivery_id=st.none() | st.text(max_size=20),
    occurred_at=st.none() | st.text(max_size=30),
    signature=st.none() | st.text(max_size=20),
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=8,
    ),
    indent=st.none() | st.integers(0, 2),
)
def test_archive_line_equals_the_json_of_the_record(
    event_id: str,
    source: str,
    delivery_id: str | None,
    occurred_at: str | None,
    signature: str | None,
    value: object,
    indent: int | None,
) -> None:
    """Property: the hand-built line is one line of JSON equal to archive_record()."""
    body = json.dumps({"event_type": "x.y", "v": value}, indent=indent).encode()
    event = replace(
        make_event(3),
        event_id=event_id,
        source=source,
        delivery_id=delivery_id,
        occurred_at=occurred_at,
        signature=signature,
        body=body,
    )
    line = archive_line(event)
    assert b"\n" not in line
    assert b"\r" not in line
    assert json.loads(line) == archive_record(event)


def test_encode_object_is_deterministic_and_named_by_content() -> None:
    """The same events give the same bytes and key; different events another key."""
    batch = [make_event(i, received_at=1.0) for i in (12, 10, 11)]
    one = encode_object("audit/", PART, batch)
    two = encode_object("audit/", PART, list(reversed(batch)))
    assert one.data == two.data
    assert one.key == two.key
    assert one.key.startswith("audit/decision/dt=2026-11-24/hour=08/")
    assert one.key.endswith(f"-{one.info.sha256[:16]}.ndjson.gz")
    assert parse_object_name(one.key) == (10, 12)
    other = encode_object("audit/", PART, [*batch, make_event(13, received_at=1.0)])
    assert other.key != one.key
    lines = [json.loads(x) for x in gzip.decompress(one.data).splitlines()]
    assert [x["seq"] for x in lines] == [10, 11, 12]


def test_decode_object_reads_back_what_encode_wrote() -> None:
    """Decoding a written object gives the same chain entry and members."""
    batch = [make_event(i, occurred_at=f"2026-11-24T08:{i:02d}:00.000+00:00") for i in (1, 2, 9)]
    encoded = encode_object("audit/", PART, batch)
    decoded = decode_object(encoded.key, encoded.data)
    assert decoded.info == encoded.info
    assert decoded.members == encoded.members == {(e.seq, e.source, e.event_id) for e in batch}
    assert encoded.info.first_event_time == "2026-11-24T08:01:00.000Z"
    assert encoded.info.last_event_time == "2026-11-24T08:09:00.000Z"


@pytest.mark.parametrize(
    "data",
    [b"", b"not gzip", gzip.compress(b"{not json}\n"), gzip.compress(b'{"seq": 1}\n')],
)
def test_decode_object_refuses_what_the_sink_did_not_write(data: bytes) -> None:
    """Garbage, broken JSON or lines without ids are a ValueError, never a guess."""
    with pytest.raises(ValueError, match="archive object"):
        decode_object("k", data)


def test_encode_object_refuses_an_empty_object() -> None:
    """An object holds at least one event."""
    with pytest.raises(ValueError, match="at least one event"):
        encode_object("", PART, [])


def test_object_names_parse_only_when_the_sink_made_them() -> None:
    """Only names of the sink's own pattern yield a seq range."""
    name = object_name(1, 22, "ab" * 32)
    assert name == "00000000000000000001-00000000000000000022-abababababababab.ndjson.gz"
    assert parse_object_name(f"x/y/{name}") == (1, 22)
    assert parse_object_name("x/y/other.ndjson.gz") is None


# -- the manifest chain --------------------------------------------------------------


def _info(n: int) -> EntryInfo:
    return EntryInfo(f"k/{n}", f"{n:064x}", 10 * n, n, n, n, "t0", "t1")


def test_link_entries_chains_each_entry_to_the_one_before() -> None:
    """Each entry's prev is the hash of the entry before; the first links to prev."""
    entries = link_entries([_info(1), _info(2), _info(3)], prev=GENESIS, start_index=0)
    assert entries[0]["prev"] == GENESIS
    assert entries[1]["prev"] == entry_hash(entries[0])
    assert entries[2]["prev"] == entry_hash(entries[1])
    assert [e["index"] for e in entries] == [0, 1, 2]


def test_manifests_link_to_their_predecessor() -> None:
    """Manifest n+1 names manifest n's hash and continues its entry chain."""
    key = Ed25519PrivateKey.generate()
    first = build_manifest(
        prefix="p", previous=ChainHead(), infos=[_info(1)], created_at="t", signer_key_id="k"
    )
    assert first["sequence"] == 0
    assert first["previous_manifest"] is None
    assert first["chain"]["start"] == GENESIS
    data, digest = sign_manifest(first, key)
    head = open_manifest(data, key.public_key()).head()
    assert head == ChainHead(0, digest, entry_hash(first["entries"][0]), 1)
    second = build_manifest(
        prefix="p", previous=head, infos=[_info(2)], created_at="t", signer_key_id="k"
    )
    assert second["previous_manifest"] == {"sequence": 0, "sha256": digest}
    assert second["entries"][0]["prev"] == head.head
    assert second["entries"][0]["index"] == 1


def test_open_manifest_refuses_altered_or_foreign_manifests() -> None:
    """A changed byte or another signer's key fails the signature check."""
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    body = build_manifest(
        prefix="p",
        previous=ChainHead(),
        infos=[_info(1)],
        created_at="t",
        signer_key_id=key_id(key.public_key()),
    )
    data, _ = sign_manifest(body, key)
    altered = json.loads(data)
    altered["manifest"]["entries"][0]["sha256"] = "0" * 64
    with pytest.raises(ManifestError, match="does not verify"):
        open_manifest(json.dumps(altered).encode(), key.public_key())
    with pytest.raises(ManifestError, match="signed by key"):
        open_manifest(data, other.public_key())
    with pytest.raises(ManifestError, match="not a signed manifest"):
        open_manifest(b"garbage", key.public_key())


def test_manifest_keys_list_newest_first() -> None:
    """Manifest names count down, so S3's ascending listing shows the newest first."""
    keys = [manifest_key("audit/", n) for n in (0, 1, 2, 10)]
    assert sorted(keys) == list(reversed(keys))
    assert [sequence_of_key(k) for k in keys] == [0, 1, 2, 10]
    assert sequence_of_key("audit/_manifests/other.json") is None


def test_signing_keys_load_from_pem_hex_and_base64() -> None:
    """PEM, hex and base64 forms give the same key; junk is refused without an echo."""
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    expected = key_id(key.public_key())
    for text in (pem, raw.hex(), base64.b64encode(raw).decode()):
        assert key_id(load_private_key(text).public_key()) == expected
    with pytest.raises(ValueError, match="expected an Ed25519") as info:
        load_private_key("hunter2-not-a-key")
    assert "hunter2" not in str(info.value)


def test_public_keys_load_from_pem_and_raw_forms() -> None:
    """The verifier takes a PEM public key or the 32 raw bytes (binary, hex, base64)."""
    public = Ed25519PrivateKey.generate().public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for data in (pem, raw, raw.hex().encode(), base64.b64encode(raw) + b"\n"):
        assert key_id(load_public_key(data)) == key_id(public)
    with pytest.raises(ValueError, match="expected an Ed25519"):
        load_public_key(b"nope")


@settings(max_examples=500, deadline=None)
@given(
    ts=st.one_of(
        st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False),
        st.integers(min_value=0, max_value=4_102_444_800).map(lambda s: s + 0.0005),
        st.integers(min_value=0, max_value=4_102_444_800).map(lambda s: s + 0.9999995),
    )
)
def test_received_at_text_equals_the_datetime_rendering(ts: float) -> None:
    """The cached formatter writes exactly what datetime writes (lines must not change:
    a retry compares them byte for byte)."""
    from datetime import datetime, timezone

    from sinks.s3.encoder import _received_iso

    expected = datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds")
    assert _received_iso(ts) == expected


@settings(max_examples=50, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=20_000),
    cuts=st.lists(st.integers(min_value=0, max_value=20_000), max_size=12),
    level=st.sampled_from([1, 3, 6, 9]),
)
def test_gzip_of_chunks_equals_one_shot_gzip(data: bytes, cuts: list[int], level: int) -> None:
    """However the lines are cut into chunks, the object bytes (and so its key) are those
    of gzip.compress(mtime=0)."""
    from sinks.s3.encoder import gzip_chunks

    edges = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    chunks = [data[a:b] for a, b in itertools.pairwise(edges)]
    assert gzip_chunks(chunks, level) == gzip.compress(data, compresslevel=level, mtime=0)
