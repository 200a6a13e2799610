"""The MIME fixture corpus (tests/fixtures/mime/): messages of our own in the shapes real
mail-client and parser test suites keep (mime4j, MimeKit, notmuch, Thunderbird, flanker);
each names in its X-Fixture header the real case it stands for.

Every valid one passes the relay's whole core with the default ``malformed = "reject"``;
every invalid one is refused with a reply naming its defect (its X-Fixture-Defect header).
"""

from __future__ import annotations

import email
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.context import build_context
from relay.core.filtering import filter_message
from relay.core.parse import parse_message
from relay.errors import MalformedMessage
from relay.model import Envelope
from relay.settings import parse_settings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mime"
VALID = sorted((FIXTURES / "valid").glob("*.eml"))
INVALID = sorted((FIXTURES / "invalid").glob("*.eml"))
CONTEXT = build_context(parse_settings('[secrets]\nlink_key = "k"\n', env={}))
ENVELOPE = Envelope("news@shop.example", ("alice@example.org",))


def _fixture_header(path: Path, name: str) -> str:
    value = email.message_from_bytes(path.read_bytes()).get(name)
    assert value, f"{path.name} has no {name} header"
    return str(value)


def test_the_corpus_is_there() -> None:
    assert len(VALID) >= 20 and len(INVALID) >= 5
    for path in (*VALID, *INVALID):
        assert len(_fixture_header(path, "X-Fixture")) > 20


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_valid_mime_passes_with_the_default_reject(path: Path) -> None:
    raw = path.read_bytes()
    assert parse_message(raw).defects == ()
    result = filter_message(CONTEXT, raw, ENVELOPE, {}, datetime.now(UTC))
    assert [g.rcpts for g in result.groups] == [("alice@example.org",)]


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_mime_is_refused_naming_its_defect(path: Path) -> None:
    defect = _fixture_header(path, "X-Fixture-Defect")
    with pytest.raises(MalformedMessage) as caught:
        filter_message(CONTEXT, path.read_bytes(), ENVELOPE, {}, datetime.now(UTC))
    reply = caught.value.reply
    assert reply.code == 554
    assert defect in reply.text
