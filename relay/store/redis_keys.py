"""Every Redis key the relay uses, in one place (the prefix comes from ``[redis] prefix``).

Rule 1: no other module spells a key; it calls one of these functions.
Rule 2: no key contains an email address: recipients appear as their keyed hash (``rkey``),
        messages as a hash of their Message-ID when the id itself could carry an address.
Rule 3: consent keys belong to one controller: ``controller`` is the controller's scope, ""
        for the one owning the consent recorded before controllers existed (its keys stay as
        they were), else the controller id (``relay.core.controllers``, ``Controller.scope``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "relay:"

    # Consent store: append-only events (a list of JSON records with a hash chain) and the
    # derived state per purpose (a hash), updated atomically together.
    def consent_events(self, rkey: str, controller: str = "") -> str:
        return f"{self.prefix}consent:events:{_scoped(controller, rkey)}"

    def consent_state(self, rkey: str, controller: str = "") -> str:
        return f"{self.prefix}consent:state:{_scoped(controller, rkey)}"

    def consent_import_seen(self, controller: str = "") -> str:
        """Set of fingerprints of imported rows, so that re-importing adds nothing."""
        return f"{self.prefix}consent:imported" + (f":{controller}" if controller else "")

    # Delivery ledger: recipients already accepted upstream for one message (dedupe on retry).
    def delivered(self, message_key: str) -> str:
        return f"{self.prefix}delivered:{message_key}"

    def relay_alive(self, identity: str) -> str:
        """A relay process's liveness (ledger Rule 7); the identity hashed (it names a host)."""
        return f"{self.prefix}alive:{hashlib.sha256(identity.encode()).hexdigest()[:16]}"

    # Audit trail: one stream of decision records and its secondary indexes.
    def audit_stream(self) -> str:
        return f"{self.prefix}audit:log"

    def audit_by_message(self, message_key: str) -> str:
        return f"{self.prefix}audit:msg:{message_key}"

    def audit_by_rcpt(self, rkey: str) -> str:
        return f"{self.prefix}audit:rcpt:{rkey}"

    # Audit per-day counts, written by the audit write script with each record
    # (``audit_counts`` describes the layout). For Redis Cluster these four must share the hash
    # slot of the stream they count (one set per audit bucket).
    def audit_counts(self) -> str:
        """Hash ``<day>|<controller>|<dimension>`` -> count."""
        return f"{self.prefix}audit:counts"

    def audit_count_dims(self) -> str:
        """Set of the ``<controller>|<dimension>`` fields ever counted."""
        return f"{self.prefix}audit:count-dims"

    def audit_count_days(self) -> str:
        """Sorted set of the day numbers that have counts (for retention)."""
        return f"{self.prefix}audit:count-days"

    def audit_without_consent(self) -> str:
        """Sorted set of stream ids of records tracked without consent, scored by time."""
        return f"{self.prefix}audit:without-consent"

    # Links minted into messages: gateway/minimise targets and single-use form nonces.
    def gateway_link(self, link_id: str) -> str:
        return f"{self.prefix}gw:{link_id}"

    def form_nonce(self, nonce: str) -> str:
        return f"{self.prefix}nonce:{nonce}"

    # Deliverability minimisation: only the day of the last open per recipient.
    def last_open(self) -> str:
        """Sorted set rkey -> day number (days since 1970-01-01) of the last open."""
        return f"{self.prefix}lastopen"

    # Retention: the relay process holding this key runs the daily consent scan.
    def retention_lock(self) -> str:
        return f"{self.prefix}retention:lock"

    # Consent store scans (``relay consent verify`` without an address): match patterns whose
    # ``*`` is the recipient key.
    # Without a controller the pattern also matches other controllers' keys: the caller keeps
    # the keys whose part after the pattern's prefix is a bare rkey (no ":").
    def consent_events_match(self, controller: str = "") -> str:
        return self.consent_events("*", controller)

    def consent_state_match(self, controller: str = "") -> str:
        return self.consent_state("*", controller)

    # Recipient side (web pages): the address behind a recipient key, so that a withdrawal or
    # a choice made through a link (which carries only the rkey) is recorded with its address.
    # Written by the pipeline when it mints links for the recipient; expires with the links.
    def recipient_address(self, rkey: str) -> str:
        return f"{self.prefix}rcpt:addr:{rkey}"

    # The wording of each notice a page showed, by its hash, so that an auditor can read the
    # text behind the ``notice.hash`` of a proof. Written once (SET NX), never expires.
    def notice_text(self, notice_hash: str) -> str:
        return f"{self.prefix}notice:{notice_hash}"


def _scoped(controller: str, rkey: str) -> str:
    return f"{controller}:{rkey}" if controller else rkey
