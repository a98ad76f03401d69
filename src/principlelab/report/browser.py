"""Render a report in headless Chromium (for screenshots and tests): no network, a throwaway profile."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from principlelab.errors import ConfigError

CHROMIUM_ENV = "PRINCIPLELAB_CHROMIUM"
CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")


def find_chromium() -> str | None:
    """``$PRINCIPLELAB_CHROMIUM``, else the first Chromium found on PATH (None if there is none)."""
    explicit = os.environ.get(CHROMIUM_ENV)
    if explicit:
        return explicit
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(extra: list[str], html: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    binary = find_chromium()
    if binary is None:
        raise ConfigError("no Chromium found; install it (Debian: apt-get install -y chromium) or set "
                          f"${CHROMIUM_ENV}")
    with tempfile.TemporaryDirectory(prefix="plab-chromium-") as profile:
        cmd = [binary, *FLAGS, f"--user-data-dir={profile}", *extra, Path(html).resolve().as_uri()]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ConfigError(f"Chromium did not finish within {timeout:.0f} s rendering {html}") from None
    if done.returncode != 0:
        tail = " ".join(done.stderr.split())[-300:]
        raise ConfigError(f"Chromium failed (exit {done.returncode}) rendering {html}: {tail}")
    return done


def screenshot(html: Path, png: Path, *, width: int = 1280, height: int = 4000, timeout: float = 120) -> Path:
    """Write a ``width`` x ``height`` screenshot of the page ``html`` to ``png``."""
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--screenshot={png}", f"--window-size={width},{height}"], html, timeout)
    if not png.exists():
        raise ConfigError(f"Chromium wrote no screenshot to {png}")
    return png


def dump_dom(html: Path, *, timeout: float = 120) -> str:
    """The page's DOM after Chromium loaded it (``--dump-dom``)."""
    return _run(["--dump-dom"], html, timeout).stdout


__all__ = ["CHROMIUM_ENV", "dump_dom", "find_chromium", "screenshot"]
