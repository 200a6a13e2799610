"""Support for the auditors' workspace tests: auditors, and a journey through the real relay.

The journey is what an inspector asks about: alice gives consent through an app's form (the
consent API), gets a tracked newsletter, withdraws, and gets an untracked one; bob is a legacy
recipient (collected before the publication date, informed in the grace period), so his
newsletter keeps its pixel on the legacy basis: tracked without consent. Every record comes
from the relay's own pipeline over SMTP; nothing is written to Redis by hand. No test here.
"""

from __future__ import annotations

import base64
import json
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from relay.passwords import hash_password
from tests.support.harness import message, send

AUDITOR = "inspector"
PASSWORD = "correct horse battery staple"
VIEWER = "viewer"  # an auditor who may not reveal addresses
API_TOKEN = "test-api-token"
# Mailchimp's open pixel as the README shows it (rule mailchimp-open, campaign_performance).
PIXEL = (
    "https://runclub.us16.list-manage.com/track/open.php?"
    "u=d4e7136c9e800768b99309b5c&id=b258016522&e=55bf2cbd2b"
)
ALICE = "alice@example.org"
BOB = "bob@example.net"


def audit_users() -> dict[str, str]:
    # Cheap scrypt parameters: the tests check the login, not the hash's cost.
    return {
        AUDITOR: hash_password(PASSWORD, n=2**10),
        VIEWER: hash_password("viewer password", n=2**10),
    }


def basic(user: str = AUDITOR, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def record_consent(base: str, **fields: Any) -> str:
    """POST one event to the consent API; its stored id."""
    body = json.dumps(fields).encode()
    request = urllib.request.Request(
        base + "/api/v1/consent",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        data = json.loads(response.read())
    return str(data["id"])


def newsletter(to: str, message_id: str) -> bytes:
    html = f'<p>Our news</p><img src="{PIXEL}" width="1" height="1" alt="">'
    return message(html, to=to, category="newsletter", message_id=message_id)


PROOF = {
    "method": "checkbox",
    "source": {"form": "signup", "form_version": "3", "page": "https://shop.example/join"},
    "notice": {"id": "tracking-notice", "version": "2", "language": "en", "hash": "sha256:9f2c"},
    "evidence": {"ip": "203.0.113.9", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)"},
}


@dataclass
class Journey:
    grant_id: str = ""
    withdraw_id: str = ""
    legacy_ids: list[str] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)


def journey(base: str, smtp_port: int) -> Journey:
    """Blocking: run it in a thread when the relay shares the caller's event loop."""
    done = Journey()
    done.grant_id = record_consent(
        base, address=ALICE, event="granted", purposes=["campaign_performance"],
        actor="recipient", **PROOF,
    )  # fmt: skip
    legacy: tuple[tuple[str, str, list[str]], ...] = (("collected", "2025-09-01T10:00:00Z", []),
              ("informed", "2026-05-02T08:00:00Z", ["campaign_performance"]))  # fmt: skip
    for event, at, purposes in legacy:
        done.legacy_ids.append(
            record_consent(
                base,
                address=BOB,
                event=event,
                occurred_at=at,
                method="import",
                purposes=purposes,
                source={"file": "crm-export-2025.csv"},
                notice={"id": "legacy-notice", "version": "1", "language": "en"},
            )
        )
    first = "<n1.2026-12@shop.example>"
    assert send(smtp_port, newsletter(ALICE, first), [ALICE, BOB])[0] == 250
    done.withdraw_id = record_consent(
        base, address=ALICE, event="withdrawn", purposes=["campaign_performance"],
        actor="recipient", method="button", source={"page": "withdrawal"},
        evidence={"ip": "198.51.100.7", "user_agent": "Mozilla/5.0"},
    )  # fmt: skip
    second = "<n2.2026-12@shop.example>"
    assert send(smtp_port, newsletter(ALICE, second), [ALICE])[0] == 250
    done.message_ids = [first, second]
    return done


__all__ = [
    "ALICE",
    "AUDITOR",
    "BOB",
    "PASSWORD",
    "PIXEL",
    "VIEWER",
    "Journey",
    "audit_users",
    "basic",
    "journey",
    "newsletter",
    "record_consent",
]
