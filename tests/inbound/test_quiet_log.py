"""``relay.inbound.quiet_log``: aiosmtpd's command log is skipped when its level is off and
unchanged (AUTH masked) when it is on."""

from __future__ import annotations

import logging

import pytest
from aiosmtpd import smtp as aiosmtpd_smtp

import relay.inbound.smtpd  # noqa: F401  (installs it)
from relay.inbound import quiet_log

LINE = b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n"


def test_installed_in_aiosmtpd() -> None:
    assert aiosmtpd_smtp.sanitized_log is quiet_log.sanitized_log


def test_on_it_logs_as_aiosmtpd_does(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("mail.log")
    with caplog.at_level(logging.INFO, logger="mail.log"):
        aiosmtpd_smtp.sanitized_log(logger.info, "%r >> %r", "peer", LINE)
    assert [r.getMessage() for r in caplog.records] == ["'peer' >> b'AUTH PLAIN ********\\r\\n'"]


def test_off_it_does_nothing(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("mail.log")
    with caplog.at_level(logging.WARNING, logger="mail.log"):
        aiosmtpd_smtp.sanitized_log(logger.info, "%r >> %r", "peer", LINE)
        aiosmtpd_smtp.sanitized_log(logger.debug, "line %r", LINE)
    assert caplog.records == []
