"""Message and package schemas shared by the registry and the edge agent (``schema: 1``).

The registry and the agent never import each other: they agree on these pydantic models, the MQTT topics
in :mod:`edgejoule.schemas.topics` and the HTTP paths in :mod:`edgejoule.schemas.api`.
"""

from edgejoule.schemas.api import (
    AgentRegistered,
    AgentRegistration,
    Assignment,
    LoadEvent,
)
from edgejoule.schemas.manifest import EnergyEstimate, LayerQuantization, ModelManifest, TensorSpec
from edgejoule.schemas.messages import AgentState, Heartbeat, Telemetry

SCHEMA_VERSION = 1

__all__ = [
    "SCHEMA_VERSION",
    "AgentRegistered",
    "AgentRegistration",
    "AgentState",
    "Assignment",
    "EnergyEstimate",
    "Heartbeat",
    "LayerQuantization",
    "LoadEvent",
    "ModelManifest",
    "Telemetry",
    "TensorSpec",
]
