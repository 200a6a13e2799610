"""Drill-down: a message -> its recipients -> each tracker -> the consent proofs relied on, and
a recipient's consent timeline beside the decisions of the emails sent to them.

Stage: async edge (HTTP handlers). Input: a message hash, a recipient key or an event id in the
path (never an address); ``reveal`` in the query. Output: pages.

Rule 1: addresses are masked unless the auditor may reveal them (``[audit_ui] reveal_users``)
        and asked to, one recipient at a time; each reveal is logged with the auditor's name.
Rule 2: a proof page shows the stored record whole (notice, method, source, evidence, rules
        digest, hash, previous hash) and the verification of the recipient's whole chain
        (``consent_verify.check_chain``), recomputed at each view.
Rule 3: the search form is a POST, so a typed address or Message-ID never appears in a URL or
        in the access log; it answers with a redirect to the hashed page.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from relay.core.recipients import recipient_key
from relay.store.audit import message_key
from relay.store.audit_counts import controller_of, sender_domain
from relay.store.audit_legend import reason, tracked_without_consent
from relay.store.audit_record import DecisionRecord
from relay.store.consent_verify import VerifyReport, check_chain
from relay.web.audit.timeline import effects, entries
from relay.web.audit.workspace import HEADERS, Workspace

log = logging.getLogger("relay.web.audit")

MAX_RECIPIENT_RECORDS = 2000  # decisions shown on one recipient page (the oldest first)
HEX = frozenset("0123456789abcdef")


def _reveal(workspace: Workspace, request: Request, user: str, rkey: str) -> bool:
    wanted = request.query_params.get("reveal") == rkey
    if wanted and workspace.may_reveal(user):
        log.info("audit reveal user=%s recipient=%s path=%s", user, rkey, request.url.path)
        return True
    return False


@dataclass(frozen=True)
class Chain:
    """One controller's consent chain for the recipient, verified now (Rule 2)."""

    controller: str
    events: list[dict[str, Any]]
    report: VerifyReport


async def _chains(workspace: Workspace, rkey: str) -> list[Chain]:
    """Every controller's chain for the recipient (each controller keeps its own)."""
    chains = []
    for owner in workspace.consent.controllers.by_id.values():
        raw, state = await workspace.consent.raw_records(rkey, owner.id)
        if not raw and not state:
            continue
        events: list[dict[str, Any]] = []
        for item in raw:
            try:
                data = json.loads(item)
            except (ValueError, UnicodeDecodeError):
                data = None
            # An event recorded before controllers names none: it is the holder's.
            base = {"controller": owner.id}
            events.append({**base, **data} if isinstance(data, dict) else {**base, "event": "?"})
        report = check_chain(rkey, raw, state, workspace.address_key)
        chains.append(Chain(owner.id, events, report))
    return chains


def _mail_of(owner: str, single: bool, records: list[DecisionRecord]) -> list[DecisionRecord]:
    """The decisions that read this controller's consent (all of them when there is one)."""
    return [r for r in records if controller_of(r) == owner or (single and not controller_of(r))]


async def message(request: Request, user: str) -> Response:
    workspace: Workspace = request.app.state.audit
    mkey = request.path_params["mkey"]
    records = await workspace.reader.message(mkey)
    if not records:
        return workspace.error(request, user, 404, "No decision record for this message.")
    revealed = request.query_params.get("reveal", "")
    may = workspace.may_reveal(user)
    if revealed and may:
        log.info("audit reveal user=%s recipient=%s path=%s", user, revealed, request.url.path)
    rows = workspace.policy_rows()
    recipients = [
        {
            "record": r,
            "controller": controller_of(r),
            "shown": r.rcpt if (may and revealed == r.recipient_key) else None,
            "trackers": [
                {
                    "t": t,
                    "reason": reason(t),
                    "without_consent": tracked_without_consent(t),
                    "row": rows.get(t.policy_rule),
                }
                for t in r.trackers
            ],
        }
        for r in records
    ]
    return workspace.render(
        request,
        user,
        "audit/message.html",
        first=records[0],
        domain=sender_domain(records[0].header_from, records[0].mail_from),
        recipients=recipients,
        may_reveal=may,
        mkey=mkey,
    )


async def recipient(request: Request, user: str) -> Response:
    workspace: Workspace = request.app.state.audit
    rkey = request.path_params["rkey"]
    if len(rkey) != 32 or not set(rkey) <= HEX:
        return workspace.error(request, user, 404, "Not a recipient key.")
    chains = await _chains(workspace, rkey)
    records = await workspace.reader.recipient(rkey, None, None, MAX_RECIPIENT_RECORDS)
    events = [e for chain in chains for e in chain.events]
    if not events and not records:
        return workspace.error(request, user, 404, "Nothing is recorded for this recipient.")
    records.sort(key=lambda r: r.decided_at)
    address = next((str(e["address"]) for e in events if e.get("address")), "")
    address = address or (records[0].rcpt if records else "")
    single = len(chains) <= 1
    return workspace.render(
        request,
        user,
        "audit/recipient.html",
        rkey=rkey,
        address=address,
        shown=address if _reveal(workspace, request, user, rkey) else None,
        may_reveal=workspace.may_reveal(user),
        chains=chains,
        events=events,
        timeline=entries(events, records),
        effects=[
            e for c in chains for e in effects(c.events, _mail_of(c.controller, single, records))
        ],
        truncated=len(records) >= MAX_RECIPIENT_RECORDS,
    )


async def proof(request: Request, user: str) -> Response:
    workspace: Workspace = request.app.state.audit
    rkey, event_id = request.path_params["rkey"], request.path_params["event_id"]
    if len(rkey) != 32 or not set(rkey) <= HEX:
        return workspace.error(request, user, 404, "Not a recipient key.")
    found = [
        (chain, i, e)
        for chain in await _chains(workspace, rkey)
        for i, e in enumerate(chain.events)
        if e.get("id") == event_id
    ]
    if not found:
        return workspace.error(request, user, 404, "No such consent event for this recipient.")
    chain, index, event = found[0]
    report, events = chain.report, chain.events
    own = [p for p in report.problems if p.index == index]
    state = [p for p in report.problems if p.index < 0]
    return workspace.render(
        request,
        user,
        "audit/proof.html",
        rkey=rkey,
        index=index,
        count=len(events),
        event=event,
        own_problems=own,
        state_problems=state,
        report=report,
        shown=event.get("address") if _reveal(workspace, request, user, rkey) else None,
        may_reveal=workspace.may_reveal(user),
    )


async def find(request: Request, user: str) -> Response:
    """Rule 3: a Message-ID or an address from the form -> the page that holds it."""
    workspace: Workspace = request.app.state.audit
    form = await request.form()
    message_id = str(form.get("message_id", "")).strip()
    address = str(form.get("address", "")).strip()
    if message_id:
        target = f"m/{message_key(message_id)}"
    elif address:
        if "@" not in address:
            raise ValueError("address: not an email address")
        target = f"r/{recipient_key(address, workspace.address_key)}"
    else:
        raise ValueError("message_id, address: give one of them")
    return RedirectResponse(target, status_code=303, headers=HEADERS)


__all__ = ["find", "message", "proof", "recipient"]
