"""Each benchmark script runs end to end with small arguments (the numbers in docs come from full runs).

No timing is asserted: timed unit tests measure the machine, not the code.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("script, args", [
    ("bench_train_loop.py", ["--epochs", "1", "--repeats", "1", "--no-optimizers"]),
    ("bench_leaderboard.py", ["--rows", "2000", "--recipes", "50", "--repeats", "1"]),
    ("bench_campaign.py", ["--trials", "4", "--repeats", "2"]),
    ("bench_sampler.py", ["--trials", "25"]),
    ("bench_sampler.py", ["--trials", "25", "--pruner", "hyperband", "--samplers", "principlelab"]),
    ("principle_tables.py", ["--page", "all", "--quick"]),
])
def test_benchmark_runs(script: str, args: list[str], tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.strip()


@pytest.mark.slow
@pytest.mark.postgres
def test_campaign_benchmark_measures_one_worker_of_a_shared_campaign(pg_url: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_campaign.py"), "--trials", "4", "--shared",
                           "--optuna-storage", "journal", "--postgres", pg_url], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = [line.split()[0] for line in done.stdout.splitlines()[2:]]
    assert rows == ["memory", "postgresql/journal/shared", "postgresql/journal/shared/ahead"], done.stdout
