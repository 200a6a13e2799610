from __future__ import annotations

from relay import replies
from relay.replies import Reply


def test_every_reply_has_a_unique_id_and_an_enhanced_code() -> None:
    found = [v for v in vars(replies).values() if isinstance(v, Reply)]
    assert len(found) > 20
    ids = [r.id for r in found]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for reply in found:
        klass = str(reply.code)[0]
        assert reply.enhanced.startswith(f"{klass}."), reply
