"""Trigger ``every_k``: grow at the end of every k-th epoch (the fixed schedule, catalog T1)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from principlelab.core.principles import Firing, PrincipleConfig, Trigger
from principlelab.core.signals import Signals
from principlelab.registry.hookspecs import hookimpl


class EveryK(Trigger):
    """Fires after epochs ``k-1, 2k-1, ...`` (never after the last epoch), at most ``max_firings``."""

    name: ClassVar[str] = "every_k"

    class Config(PrincipleConfig):
        k: int = Field(2, ge=1, le=1000, description="grow every k epochs",
                       json_schema_extra={"search": {"low": 1, "high": 10}})
        max_firings: int = Field(100, ge=1, le=100_000, description="stop firing after this many")

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.fired = 0

    def on_step(self, signals: Signals) -> Firing | None:
        return None

    def on_epoch_end(self, signals: Signals) -> Firing | None:
        if (signals.epoch + 1) % self.config.k or self.fired >= self.config.max_firings:
            return None
        self.fired += 1
        return Firing(reason=f"epoch {signals.epoch + 1} is a multiple of k={self.config.k}")


@hookimpl
def register_triggers(register):  # type: ignore[no-untyped-def]
    register(EveryK)
