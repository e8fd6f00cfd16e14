"""Security Lake Parquet, without a network: schema per class, layout, round trips, config."""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sinks.ocsf import CloudContext, Mapper, OcsfMapping, class_of
from sinks.ocsf._schema import API_ACTIVITY, BASE_EVENT, ENTITY_MANAGEMENT
from sinks.security_lake import SecurityLakeConfig
from sinks.security_lake._arrow import SchemaMismatchError, schema_for, to_row
from sinks.security_lake._client import AssumedRole, LakeClient
from sinks.security_lake.encoder import DayPartition, ParquetFormat, parse_object_name
from tests.sinks.ocsf_support import VERSIONS, approval, decision, event_from, rule
from tests.sinks.s3_support import keypair

KEYS = keypair()
ROLE = "arn:aws:iam::123456789012:role/AmazonSecurityLake-Provider-bighub-entity-mgmt-eu-west-1"
CLASSES = (API_ACTIVITY, ENTITY_MANAGEMENT, BASE_EVENT)


def _format(version: str = "1.1.0", event_class: Any = API_ACTIVITY) -> ParquetFormat:
    mapper = Mapper(OcsfMapping(), version, cloud=CloudContext("eu-west-1", "123456789012"))
    return ParquetFormat(mapper, event_class, region="eu-west-1", account="123456789012")


def _decisions(n: int, **kw: Any) -> list[Any]:
    return [
        event_from(decision("blocked", n=i), seq=10 + i, event_id=f"evt_{i}", **kw)
        for i in range(n)
    ]


def test_object_key_follows_the_security_lake_layout() -> None:
    """ext/<source>/region=/accountId=/eventDay=YYYYMMDD/<seq range>-<hash>.parquet."""
    fmt = _format()
    events = _decisions(3)
    [(partition, positions)] = fmt.split(events)
    assert partition == DayPartition("20260301", "eu-west-1", "123456789012")
    obj = fmt.encode("ext/bighub-api-activity/", partition, events)
    prefix, name = obj.key.rsplit("/", 1)
    assert prefix == (
        "ext/bighub-api-activity/region=eu-west-1/accountId=123456789012/eventDay=20260301"
    )
    assert parse_object_name(obj.key) == (10, 12)
    assert name.endswith(".parquet")
    assert positions == [0, 1, 2]


def test_events_of_two_days_make_two_partitions() -> None:
    """eventDay is the UTC day of each event's time."""
    early = event_from(decision("allowed"), seq=1, occurred_at="2026-03-01T23:59:59.999+00:00")
    late = event_from(decision("allowed"), seq=2, occurred_at="2026-03-02T00:00:00.000+00:00")
    days = [p.day for p, _ in _format().split([late, early])]  # type: ignore[attr-defined]
    assert days == ["20260301", "20260302"]


@pytest.mark.parametrize("version", VERSIONS)
def test_parquet_holds_the_declared_schema_zstd_and_time_order(version: str) -> None:
    """Columns as declared, int64 epoch-ms time, zstd, rows sorted by time."""
    fmt = _format(version)
    times = ["2026-03-01T12:00:03.000+00:00", "2026-03-01T12:00:01.000+00:00"]
    events = [
        event_from(decision("allowed"), seq=i + 1, occurred_at=t) for i, t in enumerate(times)
    ]
    obj = fmt.encode("ext/s/", fmt.split(events)[0][0], events)
    parquet = pq.ParquetFile(io.BytesIO(obj.data))
    table = parquet.read()
    assert table.schema.equals(schema_for(API_ACTIVITY, version), check_metadata=False)
    assert str(table.schema.field("time").type) == "int64"
    assert table.column("time").to_pylist() == sorted(table.column("time").to_pylist())
    assert {parquet.metadata.row_group(0).column(i).compression for i in range(3)} == {"ZSTD"}
    assert set(table.column("class_uid").to_pylist()) == {6003}


def test_encoding_is_deterministic_and_read_back() -> None:
    """The same events give the same bytes (the key names them); decode finds them again."""
    fmt = _format("1.8.0")
    events = _decisions(4)
    part = fmt.split(events)[0][0]
    one, two = fmt.encode("p/", part, events), fmt.encode("p/", part, list(reversed(events)))
    assert one.data == two.data
    assert one.key == two.key
    back = fmt.decode(one.key, one.data)
    assert back.members == one.members
    assert back.info == one.info
    stored = fmt.member_contents(one.data)
    assert all(stored[(e.seq, e.source, e.event_id)] == fmt.content(e) for e in events)


def test_decode_refuses_what_is_not_ours() -> None:
    """Bytes that are not Parquet, or Parquet without our columns, are not adopted."""
    fmt = _format()
    with pytest.raises(ValueError, match="unreadable"):
        fmt.decode("k", b"PAR1 not really")

    out = io.BytesIO()
    pq.write_table(pa.table({"x": [1]}), out)
    with pytest.raises(ValueError, match="unreadable"):
        fmt.decode("k", out.getvalue())


def test_schema_is_the_same_whatever_the_events_hold() -> None:
    """Two objects of one class have identical schemas even if one has no optional fields."""
    fmt = _format("1.8.0")
    rich = [event_from(decision("blocked", model="m1", source_ip="10.0.0.1"), seq=1)]
    bare = [event_from({"event_type": "decision_event.created"}, seq=2)]
    schemas = [
        pq.read_schema(io.BytesIO(fmt.encode("p/", fmt.split(b)[0][0], b).data))
        for b in (rich, bare)
    ]
    assert schemas[0].equals(schemas[1])


def test_unmapped_and_json_fields_keep_their_values() -> None:
    """unmapped becomes a string map (strings as-is, the rest JSON); entity.data JSON text."""
    fmt = _format("1.8.0", ENTITY_MANAGEMENT)
    event = event_from(rule(extra={"a": [1, 2]}, note="x", odd="\ud800"), seq=5)
    obj = fmt.encode("p/", fmt.split([event])[0][0], [event])
    row = pq.read_table(io.BytesIO(obj.data)).to_pylist()[0]
    unmapped = dict(row["unmapped"])
    assert unmapped["extra"] == '{"a":[1,2]}'
    assert unmapped["note"] == "x"
    assert unmapped["odd"] == '"\\ud800"'
    assert json.loads(row["entity"]["data"]) == {"max_amount": 1000}


def test_a_key_outside_the_schema_is_refused_not_dropped() -> None:
    """pyarrow would drop an undeclared key silently; to_row refuses instead."""
    schema = schema_for(API_ACTIVITY, "1.1.0")
    with pytest.raises(SchemaMismatchError, match="disposition_id"):
        to_row({"disposition_id": 2}, schema)
    with pytest.raises(SchemaMismatchError, match="actor"):
        to_row({"actor": {"app_name": "x"}}, schema)


def _nested(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    _nested,
    max_leaves=15,
)
_keys = st.sampled_from(
    [
        "decision",
        "risk_score",
        "actor",
        "agent",
        "action",
        "domain",
        "rule_id",
        "patch",
        "status",
        "approver",
        "model",
        "source_ip",
        "reason",
        "request_id",
        "tenant_id",
    ]
) | st.text(max_size=8)


@settings(max_examples=150, deadline=None)
@given(
    payload=st.dictionaries(_keys, _json, max_size=10),
    event_type=st.sampled_from(
        ["decision_event.created", "approval.approved", "rule.enabled", "other.kind"]
    ),
    version=st.sampled_from(VERSIONS),
)
def test_any_payload_fits_its_class_schema(
    payload: dict[str, Any], event_type: str, version: str
) -> None:
    """Whatever the payload, the record converts to its class's schema and reads back."""
    event = event_from(payload, event_type=event_type, seq=3)
    event_class = class_of(event.category)
    fmt = _format(version, event_class)
    obj = fmt.encode("p/", fmt.split([event])[0][0], [event])
    assert fmt.decode(obj.key, obj.data).members == {(3, "bighub", "evt_1")}
    row = pq.read_table(io.BytesIO(obj.data)).to_pylist()[0]
    unmapped = dict(row["unmapped"] or [])
    record = fmt.mapper.map(event).record
    assert len(unmapped) == len(record.get("unmapped", {}))


# -- config ------------------------------------------------------------------------------


def _config(**overrides: Any) -> SecurityLakeConfig:
    values: dict[str, Any] = {
        "name": "lake",
        "bucket": "aws-security-data-lake-eu-west-1-abc",
        "region": "eu-west-1",
        "account_id": "123456789012",
        "role_arn": "arn:aws:iam::123456789012:role/AmazonSecurityLake-Provider-x",
        "external_id": "ext-1",
        "signing_key": KEYS.private_pem,
        **overrides,
    }
    return SecurityLakeConfig.model_validate(values)


def test_config_defaults_fit_security_lake() -> None:
    """1.1.0, 5-minute cadence, one source per class, the three known event families."""
    cfg = _config()
    assert cfg.ocsf_version == "1.1.0"
    assert cfg.batch_max_wait_seconds == 300
    assert cfg.source_for("decision") == cfg.source_for("approval") == "bighub-api-activity"
    assert cfg.source_for("rule") == "bighub-entity-mgmt"
    assert cfg.source_for("other") is None
    assert cfg.source_prefix("bighub-api-activity") == "ext/bighub-api-activity"
    assert _config(source_version="2.0").source_prefix("s") == "ext/s/2.0"
    assert "ext-1" not in repr(cfg)


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"sources": {"api_activity": "a-source-name-over-20"}}, "api_activity"),
        ({"sources": {"api_activity": "same", "entity_management": "same"}}, "own custom source"),
        ({"batch_max_wait_seconds": 299}, "batch_max_wait_seconds"),
        ({"batch_max_wait_seconds": 86_401}, "batch_max_wait_seconds"),
        ({"events": ["*"]}, "sources.base_event"),
        ({"events": ["decision*"]}, "sources.base_event"),
        ({"role_arn": "arn:aws:iam::12:user/x"}, "role_arn"),
        ({"account_id": "1234"}, "account_id"),
        ({"source_roles": {"api_activity": "not-an-arn"}}, "source_roles"),
        ({"source_roles": {"unknown_class": ROLE}}, "source_roles"),
        ({"ocsf_version": "1.9.0"}, "ocsf_version"),
        ({"access_key_id": "AKIA"}, "secret_access_key"),
    ],
)
def test_config_refuses_what_security_lake_would_not_take(
    overrides: dict[str, Any], why: str
) -> None:
    """Source names <= 20 chars, cadence 5 min..1 day, a source for every routed class."""
    with pytest.raises(ValidationError, match=why):
        _config(**overrides)


def test_each_source_may_have_its_own_provider_role() -> None:
    """Security Lake makes one provider role per source; role_arn is the fallback."""
    cfg = _config(source_roles={"entity_management": ROLE})
    assert cfg.role_for("entity_management") == ROLE
    assert cfg.role_for("api_activity") == cfg.role_arn


def test_everything_routed_is_fine_with_a_base_event_source() -> None:
    """events = ["*"] is accepted once unknown types have a source."""
    cfg = _config(events=["*"], sources={"base_event": "bighub-other"})
    assert cfg.source_for("other") == "bighub-other"


# -- the role's credentials -----------------------------------------------------------------


def test_role_is_assumed_again_before_its_credentials_expire() -> None:
    """Renewed 5 minutes before expiry, not on every call."""
    now = [1000.0]
    calls: list[str] = []

    def assume(cfg: SecurityLakeConfig, role: str) -> AssumedRole:
        calls.append(f"{role} {cfg.external_id.get_secret_value()}")
        return AssumedRole("AK", "SK", "TOKEN", expires_at=now[0] + 3600)

    cfg = _config(endpoint_url="http://127.0.0.1:9")
    client = LakeClient(cfg, cfg.role_arn, clock=lambda: now[0], assume=assume)
    first = client.api()
    now[0] += 3000
    assert client.api() is first
    now[0] += 400  # within 5 minutes of expiry
    assert client.api() is not first
    assert calls == [f"{cfg.role_arn} ext-1"] * 2
    assert "TOKEN" not in repr(AssumedRole("AK", "SK", "TOKEN", 0.0))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=2048), cut=st.integers(min_value=0, max_value=100_000))
def test_reading_back_any_bytes_raises_only_value_error(data: bytes, cut: int) -> None:
    """Whatever lies at a key (junk, a truncated or spliced object), reading it back either
    works or says ValueError: the writer then treats the object as not ours."""
    fmt = _format()
    real = fmt.encode("p/", fmt.split(_decisions(2))[0][0], _decisions(2)).data
    assert fmt.decode("k", real).info.events == 2
    for blob in (data, real[: cut % (len(real) + 1)], real[:8] + data + real[-8:]):
        for read in (fmt.decode, lambda _k, b: fmt.member_contents(b)):
            with contextlib.suppress(ValueError):  # anything else fails the test
                read("k", blob)
