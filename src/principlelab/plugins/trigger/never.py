"""Trigger ``never``: the network never grows (the static baseline)."""

from __future__ import annotations

from typing import ClassVar

from principlelab.core.principles import Firing, PrincipleConfig, Trigger
from principlelab.core.signals import Signals
from principlelab.registry.hookspecs import hookimpl


class Never(Trigger):
    """Never fires."""

    name: ClassVar[str] = "never"

    class Config(PrincipleConfig):
        pass

    def on_step(self, signals: Signals) -> Firing | None:
        return None


@hookimpl
def register_triggers(register):  # type: ignore[no-untyped-def]
    register(Never)
