"""A local ``principles.py`` for campaign tests: a trigger that never fires but sleeps after every epoch,
so trials last long enough for two workers to interleave and for one to be killed mid-trial. Written
next to a campaign file, it is loaded by the campaign and by its spawned workers. Also the small
campaign file those tests run (:func:`small_campaign`)."""


def slow_principles(sleep_s: float) -> str:
    """The text of a ``principles.py`` registering trigger ``slow_never`` that sleeps ``sleep_s`` per epoch."""
    return SLOW_PRINCIPLES_TEMPLATE.replace("{sleep_s}", repr(sleep_s))


def small_campaign(name: str, *, trials: int, seeds: int, k: int, trigger: str = '["slow_never"]',
                   growth: str = '["none", "random"]') -> str:
    """A campaign file on digits: ``trials`` random coarse trials (2 epochs on a fifth of the data, no
    pruner), the top ``k`` promoted to a fine level (2 epochs) of ``seeds`` seeds each; ``trigger`` and
    ``growth`` are the TOML values searched in those slots (the other slots are fixed)."""
    return CAMPAIGN_TEMPLATE.format(name=name, trials=trials, seeds=seeds, k=k, trigger=trigger, growth=growth)


CAMPAIGN_TEMPLATE = """
name = "{name}"
tasks = ["digits"]
seed = 0

[network]
hidden = [16]

[search]
connectivity = ["dense"]
learning = ["backprop"]
trigger = {trigger}
growth = {growth}
composition = ["sequential"]

[[levels]]
name = "coarse"
data_fraction = 0.2
epochs = 2
trials = {trials}
sampler = "random"
pruner = "none"

[[levels]]
name = "fine"
epochs = 2
seeds = {seeds}

[promotion]
rule = "top_k"
k = {k}
"""


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
