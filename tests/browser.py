"""A real headless browser for the page tests: Debian's `chromium` (or FACEGEN_CHROMIUM) driven
by Playwright. Nothing is downloaded: without a browser the tests are skipped and say why."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def chromium_path() -> str | None:
    return os.environ.get("FACEGEN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def launch_browser():
    """A generator yielding one headless chromium (the `browser` fixture in conftest.py)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (the dev extra installs it)")
    path = chromium_path()
    if path is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it), "
                    "or set FACEGEN_CHROMIUM to a Chromium binary")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def screenshot(page, name: str) -> None:
    """Save the page as it stands to $FACEGEN_SCREENSHOTS/<name>.png when that is set (the
    README's pictures are taken this way: FACEGEN_SCREENSHOTS=training/assets bash tests/run.sh -k pages)."""
    folder = os.environ.get("FACEGEN_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)
