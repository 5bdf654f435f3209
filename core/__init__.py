"""edgejoule core: contracts, shared science and message schemas.

The core imports no plugin, no registry and no agent, and never torch: an edge device imports it.
"""

__version__ = "0.1.0"
