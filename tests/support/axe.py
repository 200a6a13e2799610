"""axe-core (from npm) run inside a Chromium page: the accessibility check of the web tests.

Where axe-core is: ``$AXE_CORE_JS`` (a path to ``axe.min.js``), else where ``.ci/run``
installs it for every browser test (``npm install --prefix tests/web/js``, git-ignored).
Without it the check is skipped, or failed under ``RELAY_REQUIRE_TOOLS=1`` like every other
tool. No test here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "tests" / "web" / "js" / "node_modules" / "axe-core" / "axe.min.js"


def axe_source() -> str:
    path = Path(os.environ.get("AXE_CORE_JS") or DEFAULT)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    if os.environ.get("RELAY_REQUIRE_TOOLS") == "1":
        pytest.fail(f"axe-core is required (RELAY_REQUIRE_TOOLS=1): no {path}")
    pytest.skip(f"axe-core not installed ({path})")


def violations(page: Any, source: str) -> list[dict[str, Any]]:
    """Every axe-core violation on the page as loaded (WCAG 2.x A and AA, best practices).

    The page's own Content-Security-Policy forbids scripts; the check runs through the
    browser's DevTools protocol, which that policy does not govern, in a context with
    JavaScript enabled (the pages themselves run none).
    """
    page.evaluate(source + "\n;0")
    found: list[dict[str, Any]] = page.evaluate(
        """() => axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map(v => ({
            id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)})))"""
    )
    return found
