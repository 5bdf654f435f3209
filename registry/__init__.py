"""The edgejoule registry: model packages per site, deployments, agents, telemetry and fleet queries."""
