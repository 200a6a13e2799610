"""What no log line may contain: a secret the tests configure, or an address left unmasked.

The detector is deliberately not the relay's own masking code: it looks for the shape of an
address whose local part is longer than the one character ``recipients.mask`` keeps.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Secrets that tests put into configurations (tests/support/harness.py, web.py, test files).
TEST_SECRETS = (
    "test-link-key-0123456789abcdef",
    "test-api-token",
    "current-link-key",
    "Upstream-Pw-123",
)
_UNMASKED = re.compile(r"(?<![\w.%+*-])[\w%+-][\w.%+-]+@(?:[\w-]+\.)+[A-Za-z]{2,}")


def leaks(lines: Iterable[str], secrets: Iterable[str] = TEST_SECRETS) -> list[str]:
    found = []
    wanted = tuple(secrets)
    for line in lines:
        if any(secret in line for secret in wanted) or _UNMASKED.search(line):
            found.append(line)
    return found
