"""The notice a page shows: who asks, for which address, the purposes, how to withdraw.

Stage: pure helper of the web pages (no I/O).
Input: the page kind, the language, the controller, the recipient's masked address and the
purposes the page describes. Output: a ``PageNotice``, every text the page shows as notice,
and the hash of that whole text.

Rule 1: the template shows the notice's texts and nothing else as notice wording, so the hash
        covers exactly what the recipient read (recommendation section 6: the wording shown).
Rule 2: the hash is SHA-256 over the canonical JSON of the notice's texts in page order, the
        recipient's masked address written ``{address}``: one wording has one hash whoever
        reads it, and the proof itself names the address. ``text`` is that hashed JSON, which
        the store keeps by hash so that an auditor can read the wording behind a proof.
Rule 3: the controller speaks under its configured name; with the implicit controller (no
        ``[controllers]``) the pages say "the sender of these emails".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from relay.core.controllers import Controller
from relay.model import Purpose
from relay.web import i18n
from relay.web.wording import TEXTS

# Page kinds of a notice; "object" is the withdrawal page of a legacy recipient.
CONSENT, PREFERENCES, WITHDRAW, OBJECT = "consent", "preferences", "withdraw", "object"
_ADDRESS = "\x00address\x00"  # stands for the masked address until the hash is taken


@dataclass(frozen=True, slots=True)
class PageNotice:
    id: str  # "relay-consent", "relay-preferences", "relay-withdraw", "relay-object"
    lang: str
    title: str
    who_line: str
    address_line: str
    intro: str
    parties: str
    withdraw_how: str  # how consent is withdrawn ("" on the withdrawal pages)
    purposes: tuple[tuple[Purpose, str, str], ...]  # (purpose, short title, description)
    privacy_label: str
    privacy_url: str
    contact_label: str
    contact: str
    text: str  # the hashed canonical text (Rule 2)
    hash: str


def who(controller: Controller, lang: str) -> tuple[str, str]:
    """(name as a sentence subject, name with its service providers) in ``lang``."""
    t = TEXTS[lang]
    name = controller.name or t["sender"]
    parties = ", ".join(controller.third_parties)
    if parties:
        return name, name + t["providers_named"].format(parties=parties)
    return name, name if controller.name else name + t["providers"]


def _title_name(controller: Controller, lang: str) -> str:
    return controller.name or TEXTS[lang]["sender_title"]


def build_notice(
    kind: str,
    lang: str,
    controller: Controller,
    masked_address: str,
    purposes: Sequence[Purpose],
) -> PageNotice:
    t = TEXTS[lang]
    name, with_parties = who(controller, lang)
    values = {"name": name, "address": _ADDRESS, "parties": ", ".join(controller.third_parties)}
    title_key = {CONSENT: "consent_title", PREFERENCES: "prefs_title"}.get(kind, "")
    title_key = title_key or ("object_title" if kind == OBJECT else "withdraw_title")
    intro_key = {CONSENT: "consent_intro", PREFERENCES: "prefs_intro", OBJECT: "object_intro"}
    parties = t["parties" if controller.third_parties else "parties_none"].format(**values)
    if not controller.third_parties and not controller.name:
        parties = ""  # the implicit controller declared nothing: claim nothing for it
    texts = {
        "title": t[title_key].format(**{**values, "name": _title_name(controller, lang)}),
        "who_line": t["who_line"].format(**values) if controller.name else "",
        "address_line": t["address_line"].format(**values),
        "intro": t[intro_key.get(kind, "withdraw_intro")].format(**values),
        "parties": parties,
        "withdraw_how": t["withdraw_how"] if kind in (CONSENT, PREFERENCES) else "",
        "privacy_label": t["privacy"].format(**values) if controller.privacy_url else "",
        "privacy_url": controller.privacy_url,
        "contact_label": t["contact"] if controller.contact else "",
        "contact": controller.contact,
    }
    shown = tuple(
        (p, i18n.PURPOSES[lang][p][0], i18n.PURPOSES[lang][p][1].format(who=with_parties))
        for p in purposes
    )
    canonical = json.dumps(
        {
            "id": f"relay-{kind}",
            "lang": lang,
            "texts": texts,
            "purposes": [[p.value, title, text] for p, title, text in shown],
        },
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    ).replace(json.dumps(_ADDRESS)[1:-1], "{address}")
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    filled = {k: v.replace(_ADDRESS, masked_address) for k, v in texts.items()}
    return PageNotice(
        id=f"relay-{kind}",
        lang=lang,
        purposes=shown,
        text=canonical,
        hash=digest,
        **filled,
    )
