"""deploy/sentinel/: the ARM template and its Bicep twin agree with each other and with
exactly what the sink sends; the sample KQL names only columns that exist.

No Azure here, so the checks are structural: the ARM template's shape, every parameter
and variable it references, the stream declarations against the encoder's columns, the
custom tables against their streams, the ASIM transform's output against the columns of
ASimAuditEventLogs, and the role assignment's role.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sinks.sentinel import Streams
from sinks.sentinel.encoder import DECISION_COLUMNS, RULE_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
SENTINEL = ROOT / "deploy" / "sentinel"
ARM = SENTINEL / "sentinel.json"
BICEP = SENTINEL / "sentinel.bicep"
QUERIES = SENTINEL / "queries.kql"
SENTINEL_FILES = {ARM, BICEP, QUERIES}

MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
STREAM_TYPES = {"string", "int", "long", "real", "boolean", "datetime", "dynamic"}
TABLE_TYPES = {"string", "int", "long", "real", "boolean", "dateTime", "dynamic", "guid"}
# Columns of ASimAuditEventLogs (ASIM Audit Event schema) that a transform may fill.
ASIM_AUDIT_COLUMNS = {
    "TimeGenerated", "EventCount", "EventStartTime", "EventEndTime", "EventType",
    "EventSubType", "EventResult", "EventResultDetails", "EventOriginalUid",
    "EventOriginalType", "EventOriginalSubType", "EventOriginalResultDetails",
    "EventSeverity", "EventOriginalSeverity", "EventProduct", "EventProductVersion",
    "EventVendor", "EventSchemaVersion", "EventReportUrl", "EventOwner", "EventMessage",
    "Operation", "Object", "ObjectId", "ObjectType", "OriginalObjectType", "OldValue",
    "NewValue", "ValueType", "ActorUsername", "ActorUsernameType", "ActorUserId",
    "ActorUserIdType", "ActorUserType", "ActorOriginalUserType", "ActorSessionId",
    "ActorScope", "ActorScopeId", "AdditionalFields", "DvcAction", "DvcHostname",
    "SrcIpAddr", "TargetAppName", "TargetAppType", "TargetAppId", "RuleName", "RuleNumber",
}  # fmt: skip
KQL_WORDS = {
    "TimeGenerated",  # every table has it
}


def arm() -> dict[str, Any]:
    data = json.loads(ARM.read_text())
    assert isinstance(data, dict)
    return data


def resource(kind: str, name_part: str = "") -> dict[str, Any]:
    found = [
        r for r in arm()["resources"] if r["type"] == kind and name_part in json.dumps(r["name"])
    ]
    assert len(found) == 1, f"one {kind} {name_part}"
    return found[0]


def dcr() -> dict[str, Any]:
    return resource("Microsoft.Insights/dataCollectionRules")["properties"]


def declared(stream: str) -> dict[str, str]:
    return {c["name"]: c["type"] for c in dcr()["streamDeclarations"][stream]["columns"]}


def table(name: str) -> dict[str, str]:
    props = resource("Microsoft.OperationalInsights/workspaces/tables", name)["properties"]
    assert props["schema"]["name"] == name
    return {c["name"]: c["type"] for c in props["schema"]["columns"]}


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def test_arm_template_shape() -> None:
    """A deployment template: schema, version, documented parameters, known resource types."""
    data = arm()
    assert data["$schema"].endswith("/deploymentTemplate.json#")
    assert data["contentVersion"] == "1.0.0.0"
    for name, param in data["parameters"].items():
        assert param["metadata"]["description"], f"parameter {name} is undocumented"
        if "defaultValue" in param and "allowedValues" in param:
            assert param["defaultValue"] in param["allowedValues"]
    kinds = {r["type"] for r in data["resources"]}
    assert kinds == {
        "Microsoft.OperationalInsights/workspaces/tables",
        "Microsoft.Insights/dataCollectionEndpoints",
        "Microsoft.Insights/dataCollectionRules",
        "Microsoft.Authorization/roleAssignments",
    }
    for r in data["resources"]:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}(-preview)?", r["apiVersion"])
    assert set(data["outputs"]) == {"endpoint", "dcrImmutableId", "decisionStream", "ruleStream"}


def test_every_parameter_and_variable_referenced_exists() -> None:
    """An expression naming an undefined parameter or variable fails only at deploy time."""
    data = arm()
    text = "\n".join(strings(data))
    for kind in ("parameters", "variables"):
        used = set(re.findall(kind + r"\('([A-Za-z0-9_]+)'\)", text))
        assert used <= set(data[kind]), f"undefined {kind}: {used - set(data[kind])}"
        unused = set(data[kind]) - used
        assert not unused, f"{kind} never used: {unused}"


def test_stream_declarations_are_exactly_what_the_sink_sends() -> None:
    """Stream names are the config defaults; columns and types are the encoder's, exactly."""
    streams = Streams()
    assert declared(streams.decision) == dict(DECISION_COLUMNS)
    assert declared(streams.rule) == dict(RULE_COLUMNS)
    assert {streams.decision, streams.approval, streams.other} == {"Custom-BighubDecisions"}
    assert set(dcr()["streamDeclarations"]) == {streams.decision, streams.rule}
    for stream in dcr()["streamDeclarations"]:
        assert set(declared(stream).values()) <= STREAM_TYPES


def test_custom_tables_hold_what_their_stream_carries() -> None:
    """ "source" transforms pass rows through: the custom table has the stream's columns."""
    assert table("BighubDecisions_CL") == {
        k: {"datetime": "dateTime"}.get(v, v) for k, v in DECISION_COLUMNS.items()
    }
    assert table("BighubRuleChanges_CL") == {
        k: {"datetime": "dateTime"}.get(v, v) for k, v in RULE_COLUMNS.items()
    }
    for name in ("BighubDecisions_CL", "BighubRuleChanges_CL"):
        assert set(table(name).values()) <= TABLE_TYPES


def test_data_flows_reach_declared_streams_and_destinations() -> None:
    """Each flow reads a declared stream and writes to a named destination and output."""
    props = dcr()
    destinations = {d["name"] for d in props["destinations"]["logAnalytics"]}
    variables = arm()["variables"]
    flows = {tuple(f["streams"]): f for f in props["dataFlows"]}
    assert set(flows) == {("Custom-BighubDecisions",), ("Custom-BighubRuleChanges",)}
    for flow in flows.values():
        assert set(flow["destinations"]) <= destinations
    decisions = flows[("Custom-BighubDecisions",)]
    assert decisions["outputStream"] == "Custom-BighubDecisions_CL"
    assert variables["decisionsTransform"] == "source"
    rules = flows[("Custom-BighubRuleChanges",)]
    assert "Microsoft-ASimAuditEventLogs" in rules["outputStream"]
    assert "Custom-BighubRuleChanges_CL" in rules["outputStream"]
    assert variables["ruleChangesCustomTransform"] == "source"


def transform_output(kql: str, inputs: set[str]) -> set[str]:
    """The columns a transform made of ``extend`` / ``project-away`` stages outputs."""
    stages = [s.strip() for s in re.split(r"\|(?=(?:[^']*'[^']*')*[^']*$)", kql)]
    assert stages[0] == "source"
    columns = set(inputs)
    for stage in stages[1:]:
        operator, _, rest = stage.partition(" ")
        assert operator in {"extend", "project-away"}, f"unsupported in a transform: {operator}"
        if operator == "extend":
            columns |= set(re.findall(r"(?:^|,)\s*([A-Za-z]\w*)\s*=(?!=)", rest))
        else:
            gone = {c.strip() for c in rest.split(",")}
            assert gone <= columns, f"project-away of unknown columns: {gone - columns}"
            columns -= gone
    return columns


def test_asim_transform_fills_only_asim_audit_columns() -> None:
    """Rule changes land in ASimAuditEventLogs with only its columns, EventId kept as
    EventOriginalUid (and in AdditionalFields) so KQL can deduplicate."""
    kql = arm()["variables"]["ruleChangesAsimTransform"]
    out = transform_output(kql, set(RULE_COLUMNS))
    assert out <= ASIM_AUDIT_COLUMNS, f"not ASIM audit columns: {out - ASIM_AUDIT_COLUMNS}"
    assert {"TimeGenerated", "EventOriginalUid", "EventType", "Operation", "Object"} <= out
    assert {"ObjectType", "OldValue", "NewValue", "ActorUsername", "AdditionalFields"} <= out
    assert "EventOriginalUid = EventId" in kql
    assert "'EventId', EventId" in kql


def test_role_assignment_is_monitoring_metrics_publisher_on_the_dcr() -> None:
    """The sink's identity gets the one role ingestion needs, scoped to the DCR only."""
    role = resource("Microsoft.Authorization/roleAssignments")
    assert arm()["variables"]["monitoringMetricsPublisher"] == MONITORING_METRICS_PUBLISHER
    assert "variables('monitoringMetricsPublisher')" in role["properties"]["roleDefinitionId"]
    assert "dataCollectionRules" in role["scope"]
    assert role["properties"]["principalId"] == "[parameters('principalId')]"


def bicep() -> str:
    return BICEP.read_text()


def bicep_columns(stream_or_table: str, text: str) -> dict[str, str]:
    start = text.index(stream_or_table)
    block = text[start : text.index("]", start)]
    return dict(re.findall(r"\{ name: '(\w+)', type: '(\w+)' \}", block))


def test_bicep_matches_the_arm_template() -> None:
    """The Bicep file declares the same parameters, streams, columns, transforms and role."""
    text = bicep()
    data = arm()
    params = dict(re.findall(r"^param (\w+) (\w+)", text, re.M))
    assert set(params) == set(data["parameters"])
    for name, param in data["parameters"].items():
        assert params[name] == param["type"]
    assert bicep_columns("'Custom-BighubDecisions': {", text) == dict(DECISION_COLUMNS)
    assert bicep_columns("'Custom-BighubRuleChanges': {", text) == dict(RULE_COLUMNS)
    assert bicep_columns("name: 'BighubDecisions_CL'\n      description", text) == table(
        "BighubDecisions_CL"
    )
    for name in ("decisionsTransform", "ruleChangesAsimTransform", "ruleChangesCustomTransform"):
        match = re.search(rf"^var {name} = '((?:[^'\\]|\\.)*)'$", text, re.M)
        assert match, name
        assert match.group(1).replace("\\'", "'") == data["variables"][name]
    assert MONITORING_METRICS_PUBLISHER in text
    assert "scope: dcr" in text
    assert set(re.findall(r"^output (\w+)", text, re.M)) == set(data["outputs"])
    for output in ("Microsoft-ASimAuditEventLogs", "Custom-BighubRuleChanges_CL"):
        assert output in text


KQL_FUNCTIONS = {
    "ago", "count", "min", "max", "make_set", "arg_min", "summarize", "where", "project",
    "order", "by", "desc", "and", "or", "false", "true",
}  # fmt: skip


def queries() -> list[str]:
    blocks = [b.strip() for b in QUERIES.read_text().split("\n\n")]
    return [
        "\n".join(line for line in b.splitlines() if not line.startswith("//"))
        for b in blocks
        if any(not line.startswith("//") for line in b.splitlines())
    ]


def test_sample_queries_name_only_existing_columns() -> None:
    """Each query reads a table we create (or ASIM's) and names only its columns."""
    columns = {
        "BighubDecisions_CL": set(DECISION_COLUMNS),
        "BighubDecisionsUnique": set(DECISION_COLUMNS),
        "BighubRuleChanges_CL": set(RULE_COLUMNS),
        "ASimAuditEventLogs": ASIM_AUDIT_COLUMNS,
    }
    found = queries()
    assert len(found) >= 7
    for query in found:
        source = query.splitlines()[0].strip()
        assert source in columns, f"unknown table {source}"
        body = re.sub(r'"[^"]*"', '""', "\n".join(query.splitlines()[1:]))
        aliases = set(re.findall(r"\b([A-Z]\w*)\s*=(?!=)", body))
        names = set(re.findall(r"\b([A-Z][A-Za-z]+)\b", body)) - aliases
        unknown = names - columns[source] - KQL_FUNCTIONS
        assert not unknown, f"{source}: unknown columns {unknown}"
    text = QUERIES.read_text()
    for needle in ("Allowed == false", "RiskScore >= 0.8", "Copies > 1", "arg_min"):
        assert needle in text


@pytest.mark.parametrize("path", sorted(SENTINEL_FILES), ids=lambda p: p.name)
def test_docs_point_at_each_file(path: Path) -> None:
    """docs/sentinel.md walks through every file of deploy/sentinel/."""
    assert path.name in (ROOT / "docs" / "sentinel.md").read_text()
