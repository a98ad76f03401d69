"""Run every command the docs show and fail if one fails, so the docs cannot rot.

A command is a line starting with ``$ `` inside a fenced block, or any non-comment line of a ``bash``
block. Commands run in order, README first, in one scratch directory holding copies of ``examples/``
and ``examples/quickstart.toml`` (the campaign the pages use), so the README's campaign leaves the
``principlelab.db`` the later pages query; ``plab`` and ``.venv/bin/...`` mean this interpreter's
environment and ``scripts/``/``benchmarks/`` the repository's. Output is not compared (it changes
with every run); the exit status is. Commands that cannot run here are in ``SKIP`` with the test that
runs them instead; the long benchmarks in ``HEAVY`` run only with ``--all`` (tests/test_benchmarks.py
runs each of them with small arguments).

    .venv/bin/python scripts/check_docs.py                  # every page
    .venv/bin/python scripts/check_docs.py --all            # with the long benchmarks
    .venv/bin/python scripts/check_docs.py docs/campaigns.md
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
SKIP: dict[str, str] = {
    "bash scripts/setup.sh test && .venv/bin/python -m pytest": "it is the test command CI runs (.ci/run)",
    "--workers": "needs PostgreSQL: tests/test_campaign_postgres.py runs a 2-worker campaign",
    "plab worker": "needs PostgreSQL: tests/test_campaign_postgres.py runs workers",
    "USER:PASSWORD@HOST": "a placeholder URL",
    "docs/tutorial.md": "tests/test_scaffold.py::test_tutorial_code_passes_the_kit builds the tutorial's package",
    "kill -9": "tests/test_campaign_postgres.py and tests/test_study_versions.py kill workers",
    "optuna-dashboard": "optuna-dashboard is not a dependency",
    "| head": "shown for its output; the command before the pipe runs on its own line elsewhere",
    "apt-get install": "a system package; .ci/run installs it",
}
HEAVY = ("benchmarks/bench_train_loop.py", "benchmarks/results.py", "benchmarks/bench_campaign.py",
         "benchmarks/bench_leaderboard.py", "benchmarks/bench_sampler.py")
FENCE = re.compile(r"^```(\w*)\s*$")


def commands(page: Path) -> list[str]:
    """The commands ``page`` shows, in order."""
    found, language, inside = [], "", False
    for line in page.read_text().splitlines():
        fence = FENCE.match(line.strip())
        if fence:
            inside, language = (not inside), fence.group(1)
            continue
        if not inside:
            continue
        text = line.strip()
        if text.startswith("$ "):
            found.append(text[2:])
        elif language in ("bash", "sh", "shell") and text and not text.startswith("#"):
            found.append(text)
    return found


def skipped(page: str, command: str) -> str | None:
    for key, reason in SKIP.items():
        if key in command or key == page:
            return reason
    return None


def shell_for(command: str, python: str) -> str:
    """``command`` with ``plab``, ``.venv/bin/...``, ``scripts/`` and ``benchmarks/`` pointing at this checkout."""
    shell = re.sub(r"(^|\s)(scripts|benchmarks)/", rf"\1{shlex.quote(str(ROOT))}/\2/", command)
    shell = re.sub(r"(^|&& |; )(\.venv/bin/)?plab ", r"\1@PLAB@ ", shell)
    shell = shell.replace(".venv/bin/", f"{shlex.quote(str(Path(python).parent))}/")
    return shell.replace("@PLAB@", f"{shlex.quote(python)} -m principlelab")


def run_pages(pages: list[str], python: str, *, heavy: bool) -> list[str]:
    """Run the pages' commands in one scratch directory; return the failures."""
    failures = []
    with tempfile.TemporaryDirectory(prefix="plab-docs-") as tmp:
        shutil.copytree(ROOT / "examples", Path(tmp) / "examples", ignore=shutil.ignore_patterns("*.egg-info"))
        shutil.copy(ROOT / "examples" / "quickstart.toml", Path(tmp) / "quickstart.toml")
        for page in pages:
            print(page)
            for command in commands(ROOT / page):
                reason = skipped(page, command)
                if reason is None and not heavy and any(h in command for h in HEAVY):
                    reason = "a long benchmark: run with --all"
                if reason:
                    print(f"  skip  {command}  ({reason})")
                    continue
                started = time.perf_counter()
                done = subprocess.run(shell_for(command, python), shell=True, cwd=tmp, capture_output=True,
                                      text=True, timeout=1800)
                status = "ok" if done.returncode == 0 else f"FAIL ({done.returncode})"
                print(f"  {status:5} {command}  [{time.perf_counter() - started:.1f} s]", flush=True)
                if done.returncode != 0:
                    tail = (done.stderr.strip() or done.stdout.strip())[-600:]
                    failures.append(f"{page}: `{command}` exited {done.returncode}: {tail}")
    return failures


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pages", nargs="*", help="pages to check (default: README.md and docs/*.md)")
    parser.add_argument("--all", action="store_true", help="also run the long benchmarks the docs show")
    args = parser.parse_args(argv)
    heavy, pages = args.all, args.pages or PAGES
    failures = run_pages(pages, sys.executable, heavy=heavy)
    for failure in failures:
        print(failure, file=sys.stderr)
    print(f"{len(failures)} failed" if failures else "every documented command ran")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
