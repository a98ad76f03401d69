"""A worker process keeps the garbage collector off what it holds for its whole life (studies/gc_freeze.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

import conftest
from principlelab.cli import main


def test_freezing_collects_once_then_freezes_once_per_process() -> None:
    code = """
import gc
from principlelab.studies.gc_freeze import freeze_long_lived_objects

class Node:
    pass

a, b = Node(), Node()
a.other, b.other = b, a  # a cycle
del a, b
assert gc.get_freeze_count() == 0
assert freeze_long_lived_objects() is True
assert not any(type(o).__name__ == "Node" for o in gc.get_objects() + []), "garbage was frozen"
frozen = gc.get_freeze_count()
assert frozen > 1000, frozen  # the imported world
assert freeze_long_lived_objects() is False and gc.get_freeze_count() == frozen
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr


def test_plab_campaign_run_asks_to_freeze_and_the_python_api_does_not(tmp_path: Path) -> None:
    campaign = tmp_path / "c.toml"
    campaign.write_text('name = "gcfreeze"\ntasks = ["xor"]\n[search]\ngrowth = ["none"]\ntrigger = ["never"]\n'
                        'learning = ["backprop"]\nconnectivity = ["dense"]\ncomposition = ["sequential"]\n'
                        '[[levels]]\nname = "coarse"\ntrials = 2\nepochs = 1\n'
                        '[promotion]\nk = 1\n[[levels]]\nname = "fine"\nepochs = 1\nseeds = 1\n')
    before = len(conftest.FROZE_GC)
    result = CliRunner().invoke(main, ["campaign", "run", str(campaign), "--storage",
                                       f"sqlite:///{tmp_path / 'c.db'}"])
    assert result.exit_code == 0, result.output
    assert len(conftest.FROZE_GC) > before

    from principlelab.studies.campaign import CampaignRunner
    from principlelab.studies.campaign_file import load_campaign

    spec, text = load_campaign(campaign)
    before = len(conftest.FROZE_GC)
    with CampaignRunner(spec, text, f"sqlite:///{tmp_path / 'api.db'}") as runner:
        runner.work()
    assert len(conftest.FROZE_GC) == before  # the Python API leaves the collector alone unless asked
