"""``[upstream]`` settings checked: where filtered mail goes and how the relay talks to it.

Part of the settings vocabulary (``relay.settings`` defines ``UpstreamSettings`` and checks it
with this module).
Rule 1: ``url`` is ``smtp://``, ``smtps://`` or ``file:``; anything else stops start-up.
Rule 2: a ``ca_file`` that cannot be read or holds no certificate stops start-up naming the
        key, never a TLS failure on every message later.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

from relay.errors import SettingsError


def check_upstream(url: str, ca_file: str, fail: Callable[[str, str], SettingsError]) -> None:
    """Rules 1, 2; ``fail(dotted key, message)`` builds the error naming file and line."""
    if not (url.startswith(("smtp://", "smtps://", "file:"))):
        raise fail("upstream.url", f"must start with smtp://, smtps:// or file:, not {url!r}")
    if not ca_file:
        return
    try:
        ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise fail("upstream.ca_file", f"cannot load {ca_file!r}: {reason}") from None
