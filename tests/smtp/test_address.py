"""MAIL/RCPT argument syntax (relay/smtp/address.py) and parameters (relay/smtp/params.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.smtp import param_syntax
from relay.smtp.address import AddressError, Argument, fold, parse


@pytest.mark.parametrize(
    ("arg", "address", "extra"),
    [
        ("<a@b.example>", "a@b.example", ()),
        ("<a@b.example> SIZE=100 BODY=8BITMIME", "a@b.example", ("SIZE=100", "BODY=8BITMIME")),
        (" <a@b.example>", "a@b.example", ()),  # a space after the colon (Postfix accepts it)
        ("a@b.example SIZE=1", "a@b.example", ("SIZE=1",)),  # no angle brackets
        ('<"john doe"@b.example>', '"john doe"@b.example', ()),
        ('<"a\\"b@c"@b.example>', '"a\\"b@c"@b.example', ()),
        ("<@relay.example,@hop.example:u@b.example>", "u@b.example", ()),  # route dropped
        ("<u@[192.0.2.1]>", "u@[192.0.2.1]", ()),
        ("<u@[IPv6:2001:db8::1]>", "u@[IPv6:2001:db8::1]", ()),
        ("<jöe@exämple.de> SMTPUTF8", "jöe@exämple.de", ("SMTPUTF8",)),
        ("<Postmaster>", "Postmaster", ()),
        ("<a+tag.x_y@sub-1.b.example> ENVID=A+2B", "a+tag.x_y@sub-1.b.example", ("ENVID=A+2B",)),
    ],
)  # fmt: skip
def test_valid_paths_are_kept_as_written(arg: str, address: str, extra: tuple[str, ...]) -> None:
    parsed = parse(arg, null_allowed=False)
    assert parsed.address == address
    assert parsed.params == extra
    assert parsed.utf8 == (not address.isascii())


def test_the_null_reverse_path_is_for_mail_only() -> None:
    assert parse("<> RET=HDRS", null_allowed=True) == Argument("", False, ("RET=HDRS",))
    with pytest.raises(AddressError):
        parse("<>", null_allowed=False)


@pytest.mark.parametrize(
    ("arg", "what"),
    [
        ('<"a\rRCPT TO:<injected@evil.example>"@shop.example>', "control character U+000D"),
        ("<(x)injected@evil.example>", "'('"),
        ("<a\0b@example.org>", "U+0000"),
        ("<a\x0bb@example.org>", "U+000B"),
        ("<a\x85b@example.org>", "U+0085"),
        ("<a\udcffb@example.org>", "not UTF-8"),  # an invalid byte, as aiosmtpd decodes it
        ("<a..b@example.org>", "double dot"),
        (("<.a@example.org>"), "leading"),
        ("<a@example..org>", "empty label"),
        ("<a@-x.org>", "not a domain label"),
        ("<a@[300.1.1.1]>", "address literal"),
        ("<a@example.org>junk", "after the closing"),
        ("<a@example.org", "no closing"),
        ('<"a@example.org>', "no closing"),
        ("<a@example.org> =x", "keyword"),
        ("<a@example.org> ENVID=a=b", "ENVID"),
        ("<a<b@example.org>", "'<'"),
        ("<ab>", "no @domain"),
        ('<"ab"x@example.org>', "after a quoted"),
    ],
)
def test_hostile_paths_are_refused_saying_why(arg: str, what: str) -> None:
    with pytest.raises(AddressError, match=r".*") as info:
        parse(arg, null_allowed=False)
    assert what in str(info.value)


def test_duplicates_fold_on_the_domain_only() -> None:
    assert fold("alice@Example.ORG") == fold("alice@example.org")
    assert fold("Alice@example.org") != fold("alice@example.org")
    assert fold("POSTMASTER") == fold("postmaster")


_atext = st.text(alphabet="abcXYZ019!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=8)
_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)


@given(st.lists(_atext, min_size=1, max_size=3), st.lists(_label, min_size=1, max_size=3))
def test_every_dot_atom_address_parses_to_itself(atoms: list[str], labels: list[str]) -> None:
    address = ".".join(atoms) + "@" + ".".join(labels)
    assert parse(f"<{address}>", null_allowed=False).address == address
    assert parse(f" {address} SIZE=10", null_allowed=False).address == address


@given(st.text(max_size=60))
def test_no_input_crashes_and_no_accepted_address_holds_a_control(text: str) -> None:
    try:
        parsed = parse(text, null_allowed=True)
    except AddressError:
        return
    assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in parsed.address)
    assert "(" not in parsed.address.rpartition("@")[0].strip('"') or parsed.address[0] == '"'


def test_mail_parameters_are_checked_and_kept_as_written() -> None:
    mail = param_syntax.mail(
        ("body=8bitmime", "ENVID=QQ+2B314159", "ret=hdrs", "SIZE=10", "AUTH=<>")
    )
    assert mail.written == ("body=8bitmime", "ENVID=QQ+2B314159", "ret=hdrs", "SIZE=10")
    assert (mail.envid, mail.ret, mail.size) == ("QQ+314159", "HDRS", 10)
    for bad in (
        ("BODY=BINARYMIME",),
        ("RET=ALL",),
        ("ENVID=a b",),
        ("SIZE=x",),
        ("SIZE=1", "size=2"),
    ):
        with pytest.raises(param_syntax.ParamError) as info:
            param_syntax.mail(bad)
        assert not info.value.unknown
    with pytest.raises(param_syntax.ParamError) as info:
        param_syntax.mail(("XFOO=1",))
    assert info.value.unknown


def test_rcpt_parameters_notify_and_orcpt() -> None:
    rcpt = param_syntax.rcpt(("NOTIFY=success,FAILURE", "ORCPT=rfc822;Bob+40example.org"))
    assert rcpt.notify == frozenset({"SUCCESS", "FAILURE"})
    assert rcpt.orcpt == ("rfc822", "Bob@example.org")
    assert param_syntax.rcpt(("NOTIFY=NEVER",)).notify == frozenset({"NEVER"})
    for bad in (("NOTIFY=NEVER,SUCCESS",), ("NOTIFY=",), ("ORCPT=bob@x",), ("ORCPT=rfc822;a b",)):
        with pytest.raises(param_syntax.ParamError):
            param_syntax.rcpt(bad)
