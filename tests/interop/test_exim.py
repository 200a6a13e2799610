"""Exim 4.96 (Debian's exim4-daemon-light) in front of the relay (issue 14.1).

On every first delivery attempt Exim pipelines ``<CRLF>.<CRLF>QUIT<CRLF>`` and closes its side
of the connection at once; a relay that gave up at that FIN lost the message and Exim deferred
it for hours ("Remote host closed connection in response to end of data"). The message must be
delivered once, on that first attempt, and Exim must log the relay's 250.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import pytest

from tests.interop.conftest import HTML, TEXT, Front, assert_delivered_once_faithfully
from tests.support.exim import Exim, exim_available

pytestmark = [pytest.mark.timeout(120), pytest.mark.interop]


def _message() -> bytes:
    return (
        "From: app@shop.example\nTo: alice@example.org\nSubject: interop exim\n"
        'MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary="alt"\n\n'
        f"--alt\nContent-Type: text/plain\n\n{TEXT.format(client='Exim')}\n"
        f"--alt\nContent-Type: text/html\n\n{HTML.format(client='Exim')}\n--alt--\n"
    ).encode()


@pytest.fixture
def exim_home() -> Path:
    if not exim_available() or os.geteuid() != 0:
        reason = "unpacked exim4 (see .ci/run) and root (for its mount namespace) needed"
        if os.environ.get("RELAY_REQUIRE_TOOLS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    # Not under pytest's 0700 tmp_path: Exim drops to its own user for parts of its work.
    home = Path(tempfile.mkdtemp(prefix="relay-exim-"))
    home.chmod(0o755)
    return home


async def test_exim_delivers_once_on_the_first_attempt(front: Front, exim_home: Path) -> None:
    exim = Exim(exim_home, front.port)
    log = await asyncio.to_thread(
        exim.submit, _message(), "app@shop.example", ["alice@example.org"]
    )
    assert "=> alice@example.org" in log, log
    assert 'C="250 2.0.0' in log, log  # the relay's 250 was read, after Exim's FIN
    assert "==" not in log and "defer" not in log, log
    assert "Completed" in log
    assert_delivered_once_faithfully(front, "alice@example.org")
