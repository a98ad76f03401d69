"""A local ``principles.py`` for campaign tests: a trigger that never fires but sleeps after every epoch,
so trials last long enough for two workers to interleave and for one to be killed mid-trial. Written
next to a campaign file, it is loaded by the campaign and by its spawned workers."""


def slow_principles(sleep_s: float) -> str:
    """The text of a ``principles.py`` registering trigger ``slow_never`` that sleeps ``sleep_s`` per epoch."""
    return SLOW_PRINCIPLES_TEMPLATE.replace("{sleep_s}", repr(sleep_s))


SLOW_PRINCIPLES_TEMPLATE = '''
import time
from typing import ClassVar

from principlelab.core.principles import PrincipleConfig, Trigger
from principlelab.registry import hookimpl


class SlowNever(Trigger):
    name: ClassVar[str] = "slow_never"

    class Config(PrincipleConfig):
        pass

    def on_step(self, signals):
        return None

    def on_epoch_end(self, signals):
        time.sleep({sleep_s})
        return None


@hookimpl
def register_triggers(register):
    register(SlowNever)

'''
