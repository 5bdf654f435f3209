"""What a site's agents can be told to serve: a model package (by its id), or a classical method.

A classical method is named like a package so that every place that names what an agent serves (assignments,
deployments, heartbeats' ``current_model_id``, telemetry's ``model_id``, the fleet's groups) holds one string:
``method:NAME`` or ``method:NAME(key=value,...)``, e.g. ``method:rzf-equal``, ``method:wmmse(tol=0.01)``. The
options are the baseline's keyword arguments; the id is canonical (keys sorted, numbers in one spelling), so
``method:wmmse(tol=1e-2)`` and ``method:wmmse(tol=0.01)`` are one fleet group. No package id starts with
``method:`` (manifest ids cannot hold a colon).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

PREFIX = "method:"
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_KEY = r"[A-Za-z_][A-Za-z0-9_]{0,31}"
_VALUE = r"[A-Za-z0-9_.+-]{1,32}"
_TARGET = re.compile(rf"^{PREFIX}(?P<name>{_NAME})(?:\((?P<options>{_KEY}={_VALUE}(?:,{_KEY}={_VALUE}){{0,7}})\))?$")

OptionValue = int | float | str


class MethodTarget(BaseModel):
    """A classical method with its options, as an agent is told to serve it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=rf"^{_NAME}$", description="a precoding baseline, e.g. rzf, rzf-equal, wmmse")
    options: dict[str, OptionValue] = Field(default_factory=dict, max_length=8,
                                            description="the baseline's keyword arguments, e.g. {'tol': 0.01}")

    @property
    def id(self) -> str:
        """The canonical target id: ``method:NAME`` or ``method:NAME(k=v,...)`` with sorted keys."""
        if not self.options:
            return f"{PREFIX}{self.name}"
        return f"{PREFIX}{self.name}(" + ",".join(f"{k}={_spell(v)}" for k, v in sorted(self.options.items())) + ")"


def _spell(value: OptionValue) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _value(text: str) -> OptionValue:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def is_method(target: str) -> bool:
    return target.startswith(PREFIX)


def parse_target(target: str) -> MethodTarget | None:
    """The method ``target`` names, or None for a package id. A ``method:`` id that does not parse is a
    ValueError saying what the form is."""
    if not is_method(target):
        return None
    match = _TARGET.fullmatch(target)
    if match is None:
        raise ValueError(f"'{target[:80]}' is not a method target: write method:NAME or method:NAME(key=value,...), "
                         "e.g. method:rzf-equal or method:wmmse(tol=0.01)")
    pairs = (item.split("=", 1) for item in (match["options"] or "").split(",") if item)
    options = {key: _value(value) for key, value in pairs}
    return MethodTarget(name=match["name"], options=options)

