"""The ``edgejoule`` command line: typer + rich; plugins add commands through ``register_commands``."""
