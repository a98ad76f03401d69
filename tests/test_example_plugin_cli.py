"""A separately pip-installed plugin package appears in `plab plugins` and runs in `plab run`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "principlelab-example-plugin"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("example-plugin")
    project = tmp / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(project)], check=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("PRINCIPLELAB_DISABLE_PLUGIN_AUTOLOAD", None)  # a real user's environment autoloads
    return env


def plab(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "principlelab", *args], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_installed_plugin_is_listed_with_its_package(plugin_env: dict[str, str]) -> None:
    done = plab(plugin_env, "plugins", "--json")
    assert done.returncode == 0, done.stderr
    rows = {(r["slot"], r["name"]): r for r in json.loads(done.stdout)}
    growth = rows[("growth", "narrowest_first")]
    assert growth["package"] == "principlelab-example-plugin" and growth["version"] == "0.1.0"
    assert [p["name"] for p in growth["parameters"]] == ["units"]
    assert ("trigger", "loss_below") in rows and ("growth", "random") in rows


@pytest.mark.slow
def test_installed_plugin_runs_and_grows(plugin_env: dict[str, str]) -> None:
    done = plab(plugin_env, "run", "--task", "digits", "--epochs", "4", "--hidden", "64,32",
                "--growth", "narrowest_first", "--trigger", "loss_below",
                "--set", "trigger.loss_below.threshold=1.0", "--set", "growth.narrowest_first.units=5", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["widths"] == [64, 64, 37, 10]  # the narrower layer 2 took the 5 units
    assert [(e["layer"], e["units"], e["principle"]) for e in result["growth_events"]] == [(2, 5, "narrowest_first")]
    assert "principlelab-example-plugin==0.1.0" in result["versions"]["growth.narrowest_first"]
    assert result["test_accuracy"] > 0.8
