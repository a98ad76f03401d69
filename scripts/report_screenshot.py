#!/usr/bin/env python
"""Run a small campaign (or use an existing database), write its ``plab report`` and screenshot the page
with headless Chromium.

    .venv/bin/python scripts/report_screenshot.py                      # runs examples/quickstart.toml (~30 s)
    .venv/bin/python scripts/report_screenshot.py --campaign-file my.toml
    .venv/bin/python scripts/report_screenshot.py --storage sqlite:///principlelab.db --campaign quickstart

Writes the report to ``--out`` (default ``report-<campaign>/``) and the screenshot to ``--screenshot``
(default ``report-screenshot.png``), both relative to the current directory. A campaign it runs goes into
a fresh SQLite file under ``--work`` (default: a temporary folder, deleted afterwards) unless
``--storage`` is given. Needs Chromium (Debian: ``apt-get install -y chromium``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILE = ROOT / "examples" / "quickstart.toml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--campaign-file", type=Path, default=DEFAULT_FILE,
                        help="campaign to run first (default: examples/quickstart.toml)")
    parser.add_argument("--campaign", help="report this campaign of --storage without running anything")
    parser.add_argument("--storage", help="database URL (default: a fresh SQLite file under --work)")
    parser.add_argument("--work", type=Path, help="folder for the fresh database (kept; default: temporary)")
    parser.add_argument("--out", type=Path, help="report folder (default: report-<campaign>)")
    parser.add_argument("--screenshot", type=Path, default=Path("report-screenshot.png"))
    parser.add_argument("--window-size", default="1280,4000", help="WIDTH,HEIGHT in pixels")
    args = parser.parse_args(argv)
    if args.campaign and not args.storage:
        parser.error("--campaign reports an existing database: give its --storage too")
    width, height = (int(v) for v in args.window_size.split(","))

    with tempfile.TemporaryDirectory(prefix="plab-report-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        storage = args.storage or f"sqlite:///{work / 'principlelab.db'}"
        name = args.campaign
        if name is None:
            name = tomllib.loads(args.campaign_file.read_text())["name"]
            started = time.perf_counter()
            cmd = [sys.executable, "-m", "principlelab", "campaign", "run", str(args.campaign_file.resolve()),
                   "--storage", storage]
            print(f"running campaign {name!r} from {args.campaign_file} into {storage} ...", flush=True)
            done = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.stderr.write(done.stderr[-2000:])
                return done.returncode
            print(f"campaign done in {time.perf_counter() - started:.1f} s", flush=True)

        from principlelab.report import campaign_report
        from principlelab.report.browser import screenshot
        from principlelab.studies.db import LeaderboardDB

        out = args.out or Path(f"report-{name}")
        with LeaderboardDB(storage, create=False) as db:
            result = campaign_report(db, name, out, storage)
        print(f"report: {result.index} ({len(result.figures)} figures, {result.seconds:.1f} s)")
        started = time.perf_counter()
        png = screenshot(result.index, args.screenshot, width=width, height=height)
        print(f"screenshot: {png} ({png.stat().st_size} bytes, {width}x{height}, "
              f"{time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
