"""Which client parameters reach which upstream (RFC 3461 5.2, RFC 6152, RFC 6531)."""

from __future__ import annotations

from relay.smtp.params import (
    mail_params,
    needs_smtputf8,
    rcpt_params,
    wants_success_notice,
)
from relay.smtp.reply import Extensions

FULL = Extensions({"PIPELINING": "", "8BITMIME": "", "SMTPUTF8": "", "DSN": "", "SIZE": "1000"})
BARE = Extensions({})
CLIENT = ("BODY=8BITMIME", "RET=HDRS", "ENVID=Msg+2B42+3Dx", "AUTH=<>", "SIZE=5", "SMTPUTF8")


def test_dsn_parameters_pass_unchanged_to_an_upstream_with_dsn() -> None:
    got = mail_params(CLIENT, FULL, size=120, eight_bit=False, smtputf8=False)
    # ENVID keeps its case and xtext; the client's SIZE and AUTH= are not the upstream's.
    assert got == ["BODY=8BITMIME", "SMTPUTF8", "SIZE=120", "RET=HDRS", "ENVID=Msg+2B42+3Dx"]
    rcpt = ("notify=success,delay", "ORCPT=rfc822;Bob+2Bx@Example.org", "X-FOO=1")
    assert rcpt_params(rcpt, FULL) == ["notify=success,delay", "ORCPT=rfc822;Bob+2Bx@Example.org"]


def test_nothing_of_dsn_goes_to_an_upstream_without_it() -> None:
    assert mail_params(CLIENT, BARE, size=120, eight_bit=True, smtputf8=True) == []
    assert rcpt_params(("NOTIFY=NEVER", "ORCPT=rfc822;a@b"), BARE) == []


def test_success_notices_are_owed_only_when_asked() -> None:
    assert wants_success_notice(("NOTIFY=SUCCESS,FAILURE",))
    assert wants_success_notice(("notify=delay,success",))
    assert not wants_success_notice(("NOTIFY=NEVER",))
    assert not wants_success_notice(("NOTIFY=FAILURE,DELAY",))
    assert not wants_success_notice(())
    assert not wants_success_notice(("NOTIFY=SOMETIMES",))  # never owed on a doubt


def test_8bit_data_is_declared_even_when_the_client_did_not() -> None:
    assert mail_params((), FULL, size=1, eight_bit=True, smtputf8=False)[0] == "BODY=8BITMIME"
    assert mail_params((), FULL, size=1, eight_bit=False, smtputf8=False) == ["SIZE=1"]


def test_what_needs_smtputf8() -> None:
    plain = b"Subject: hello\r\n\r\nbody\r\n"
    utf8_header = "Subject: été\r\n\r\nbody\r\n".encode()
    assert needs_smtputf8("a@b.example", ["jörg@b.example"], plain, ())
    assert needs_smtputf8("jörg@b.example", ["a@b.example"], plain, ())
    assert needs_smtputf8("a@b.example", ["c@b.example"], utf8_header, ("SMTPUTF8",))
    # Legacy 8-bit headers without the client asking: an 8BITMIME matter, not SMTPUTF8.
    assert not needs_smtputf8("a@b.example", ["c@b.example"], utf8_header, ())
    assert not needs_smtputf8("a@b.example", ["c@b.example"], plain, ("SMTPUTF8",))
