"""Finding the system's Chromium for Playwright (it cannot download its own browser here)."""

from __future__ import annotations

import os
import shutil

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # no connections out of a closed network
    "--disable-component-update",
    "--disable-sync",
]
"""How the tests start Chromium."""


def chromium_path() -> str | None:
    """Chromium from CHROMIUM (a path) or the PATH (Debian's ``chromium`` package)."""
    given = os.environ.get("CHROMIUM")
    if given:
        return given
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None
