"""The generated docs (CLI reference, kernel API) match the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_generated_cli_and_api_docs_are_current():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_every_documented_command_runs():
    """scripts/check_docs.py runs each command the README and docs/ show (long benchmarks excepted)."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_docs.py")], capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
