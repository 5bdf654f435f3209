"""Plugin ``kd``: the knowledge-distillation compressor (equations in :mod:`edgejoule.plugins.reception.kd_core`)
and the ``edgejoule distill`` / ``distill-export`` commands. torch is imported only when they run."""

from __future__ import annotations

from edgejoule.hookspecs import hookimpl
from edgejoule.plugins.reception.kd_core import KnowledgeDistillation


@hookimpl
def register_compressors(register) -> None:
    register("kd", KnowledgeDistillation())


@hookimpl
def register_commands(cli) -> None:
    from edgejoule.plugins.reception.distill_cli import distill_command, distill_export_command

    cli.command("distill")(distill_command)
    cli.command("distill-export")(distill_export_command)
