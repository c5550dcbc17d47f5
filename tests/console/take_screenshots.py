"""Screenshots of the console for the docs, taken from the order saga demo.

``python -m tests.console.take_screenshots`` runs ``python -m sample_order_app demo --console``
(embedded nats-server, every service a process), waits for the demo to finish, then opens the
console in Chromium and saves docs/console-list.png and docs/console-instance.png (the order
whose shipment fails and is compensated).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from playwright.async_api import async_playwright

from tests.console.browser import CHROMIUM_ARGS, chromium_path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
VIEWPORT = {"width": 1440, "height": 900}


async def _console_url(proc: asyncio.subprocess.Process) -> str:
    """Read the demo's output until it says where the console keeps serving."""
    assert proc.stdout is not None
    marker = "The console keeps serving at "
    async with asyncio.timeout(180):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise RuntimeError("the demo ended before serving the console")
            print(line, end="", flush=True)
            if marker in line:
                return line.split(marker, 1)[1].split(" ", 1)[0]


async def main() -> int:
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}  # the demo embeds a server
    env["PYTHONUNBUFFERED"] = "1"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sample_order_app", "demo", "--console", "0",
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
    )
    try:
        url = await _console_url(proc)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=chromium_path(), args=CHROMIUM_ARGS
            )
            page = await browser.new_page(viewport=VIEWPORT)
            await page.goto(url)
            await page.locator("table.instances tbody tr[data-instance]").nth(7).wait_for()
            await page.screenshot(path=str(DOCS / "console-list.png"))
            await page.goto(f"{url}#/instance/fail-ship-1004")
            await page.locator("#timeline[data-ready] .vis-item").first.wait_for()
            await page.screenshot(path=str(DOCS / "console-instance.png"), full_page=False)
            await browser.close()
        print(f"saved {DOCS / 'console-list.png'} and {DOCS / 'console-instance.png'}")
        return 0
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)  # by PID: the demo stops its services
        await proc.wait()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
