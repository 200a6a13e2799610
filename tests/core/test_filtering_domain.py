"""The sender's and recipients' domains the filter picks a rule pack by: the fast reading of a
plain envelope address gives what ``email.utils.parseaddr`` gives, for every shape."""

from __future__ import annotations

from email.utils import parseaddr

import pytest

from relay.core.filtering import _domain

SHAPES = [
    "a@B.Example",
    "user17@example.org",
    "a.b+tag@sub.example.org",
    "<a@b.example>",
    "Name <a@b.example>",
    '"a@x"@b.example',
    '"quoted local"@b.example',
    "a@b@c.example",
    "(comment)a@b.example",
    "a@[192.0.2.1]",
    "a b@c.example",
    "a@b.example, c@d.example",
    "üser@bücher.example",
    "nodomain",
    "a@",
    "@b.example",
    "",
]


@pytest.mark.parametrize("address", SHAPES)
def test_domain_is_what_parseaddr_reads(address: str) -> None:
    assert _domain(address) == parseaddr(address)[1].rpartition("@")[2].lower()
