"""Routing of event types to sinks by glob patterns."""

from __future__ import annotations

from receiver.routing import Router
from sinks.stdout import StdoutConfig


def test_globs_route_per_sink() -> None:
    """Each sink gets the event types its patterns match; case-sensitive; order kept."""
    router = Router(
        [
            StdoutConfig(name="all"),
            StdoutConfig(name="decisions", events=["decision_event.*"]),
            StdoutConfig(name="rules-approvals", events=["rule.*", "approval.created"]),
        ]
    )
    assert router.route("decision_event.created") == ("all", "decisions")
    assert router.route("rule.patch_applied") == ("all", "rules-approvals")
    assert router.route("approval.created") == ("all", "rules-approvals")
    assert router.route("approval.resolved") == ("all",)
    assert router.route("Decision_event.created") == ("all",)


def test_no_route() -> None:
    """An event type no sink wants routes nowhere."""
    assert Router([StdoutConfig(name="x", events=["rule.*"])]).route("signal.new") == ()
