"""MQTT topic names. Every agent publishes only under ``edgejoule/v1/agents/<agent_id>/``, which the
broker's ACL enforces; the registry subscribes with an MQTT v5 shared subscription so several registry
processes split the telemetry."""

from __future__ import annotations

PREFIX = "edgejoule/v1"
SHARED_GROUP = "registry"


def agent_root(agent_id: str) -> str:
    return f"{PREFIX}/agents/{agent_id}"


def telemetry(agent_id: str) -> str:
    return f"{agent_root(agent_id)}/telemetry"


def heartbeat(agent_id: str) -> str:
    return f"{agent_root(agent_id)}/heartbeat"


def status(agent_id: str) -> str:
    """Retained AgentState; the last will sets it to offline."""
    return f"{agent_root(agent_id)}/status"


def events(agent_id: str) -> str:
    """LoadEvent messages (a package failed to load or its self-test failed)."""
    return f"{agent_root(agent_id)}/events"


def assignment(agent_id: str) -> str:
    """The registry notifies an agent that its assignment changed (payload: Assignment)."""
    return f"{agent_root(agent_id)}/assignment"


def agent_client_id(agent_id: str) -> str:
    """The one MQTT client id an agent's login may connect with: the broker binds it to the login, so no login
    can take over the registry's session or another agent's."""
    return f"edge-agent-{agent_id}"


def shared(topic_filter: str, group: str = SHARED_GROUP) -> str:
    return f"$share/{group}/{topic_filter}"


ALL_TELEMETRY = f"{PREFIX}/agents/+/telemetry"
ALL_HEARTBEATS = f"{PREFIX}/agents/+/heartbeat"
ALL_STATUS = f"{PREFIX}/agents/+/status"
ALL_EVENTS = f"{PREFIX}/agents/+/events"
# what the registry's ingest subscribes to (each through the shared subscription)
REGISTRY_INGEST = (ALL_TELEMETRY, ALL_HEARTBEATS, ALL_STATUS, ALL_EVENTS)
