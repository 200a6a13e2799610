"""Every Redis key the relay uses, in one place (the prefix comes from ``[redis] prefix``).

Rule 1: no other module spells a key; it calls one of these functions.
Rule 2: no key contains an email address: recipients appear as their keyed hash (``rkey``),
        messages as a hash of their Message-ID when the id itself could carry an address.
Rule 3: the layout is the same on one server and on a Redis Cluster. A cluster places a key by
        the CRC16 of its hash tag (the text between the first ``{`` and ``}``); every operation
        that touches several keys at once (a Lua script, MULTI/EXEC, MGET) touches keys with
        the same tag, so they share one hash slot. The tag is chosen so that load spreads
        evenly over the masters:

        entity            tag                     keys with that tag
        ----------------  ----------------------  --------------------------------------------
        one recipient     ``{<rkey>}``            consent events, consent state and imported-row
                                                  fingerprints of every controller, the address
                                                  behind the rkey
        one message       ``{<ledger key>}``      delivery ledger (answers per recipient)
        audit bucket b    ``{<AUDIT_TAGS[b]>}``   the bucket's stream, its message and
                                                  recipient indexes, its per-day counts and its
                                                  "tracked without consent" index, for the
                                                  messages hashed to b
        open bucket b     ``{<OPEN_TAGS[b]>}``    last-open days of the recipients hashed to b
        single keys       (whole key)             gateway link, form nonce, notice text,
                                                  retention lock

        Recipient keys and ledger keys are uniform hashes, so tagging by them spreads keys over
        all 16384 slots. The audit trail and the last-open days need ordered scans across many
        recipients or messages (by time, by day), which one key per recipient cannot give:
        they are cut into a fixed number of buckets, a record going to the bucket of its
        message (an open to the bucket of its recipient). The bucket tags are chosen so that
        bucket ``b`` of ``n`` lies in slots ``[b * 16384 / n, (b + 1) * 16384 / n)``: a
        cluster whose masters own equal contiguous slot ranges (what ``--cluster create`` and
        ``--cluster rebalance`` produce) holds an equal share of the buckets on each master.
        Queries across buckets (audit search by time or recipient, exports, ``relay
        inactive``) read every bucket by its name, so the cluster client follows a bucket
        wherever its slot lives, also while a slot migrates (MOVED/ASK redirections).
Rule 4: the bucket counts and the tag strings are part of the stored data's layout: changing
        them moves records to other keys. ``tests/store/test_cluster.py`` pins them.
Rule 5: keys added later follow the same pattern: put the entity's tag in braces, right after
        the entity's name (``<prefix><entity>:{<tag>}:<part>``), and reuse an existing tag when
        the new key is written together with existing ones (e.g. per-day audit counters in the
        audit bucket, a controller's consent under the recipient's tag). The prefix must not
        contain braces (settings refuse it), or it would become the tag of every key.
Rule 6: consent keys belong to one controller: ``controller`` is the controller's scope, ""
        for the one owning the consent recorded before controllers existed, else the
        controller id (``relay.core.controllers``, ``Controller.scope``); a controller's keys
        end with ``:<scope>`` and carry the recipient's tag like the others.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache

SLOTS = 16384
AUDIT_BUCKETS = 64  # Rule 4
OPEN_BUCKETS = 64  # Rule 4


def _slot(tag: str) -> int:
    from redis.crc import key_slot

    return int(key_slot(tag.encode()))


@cache
def spread_tags(count: int, label: str) -> tuple[str, ...]:
    """``count`` hash tags, tag ``b`` hashing into slots ``[b * 16384 / count, (b+1) * ...)``.

    Tag ``b`` is ``<label><b>.<n>`` with the smallest ``n`` that lands in the range: a
    deterministic function of (count, label), found in a few milliseconds.
    """
    tags: list[str] = []
    for bucket in range(count):
        low, high = bucket * SLOTS // count, (bucket + 1) * SLOTS // count
        n = 0
        while not low <= _slot(f"{label}{bucket}.{n}") < high:
            n += 1
        tags.append(f"{label}{bucket}.{n}")
    return tuple(tags)


@cache
def _streams(prefix: str) -> tuple[str, ...]:
    return tuple(Keys(prefix).audit_stream(b) for b in range(AUDIT_BUCKETS))


def bucket_of(value: str, count: int) -> int:
    """The bucket of a message or recipient key: a uniform hash of the text, modulo ``count``."""
    digest = hashlib.blake2b(value.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "relay:"

    # Consent store: append-only events (a list of JSON records with a hash chain) and the
    # derived state per purpose (a hash), updated atomically together; tag: the recipient.
    def consent_events(self, rkey: str, controller: str = "") -> str:
        return f"{self.prefix}consent:{{{rkey}}}:events{_scope(controller)}"

    def consent_state(self, rkey: str, controller: str = "") -> str:
        return f"{self.prefix}consent:{{{rkey}}}:state{_scope(controller)}"

    def consent_import_seen(self, rkey: str, controller: str = "") -> str:
        """Set of fingerprints of this recipient's imported rows (re-importing adds nothing)."""
        return f"{self.prefix}consent:{{{rkey}}}:imported{_scope(controller)}"

    # Delivery ledger: recipients already accepted upstream for one message (dedupe on retry).
    def delivered(self, message_key: str) -> str:
        return f"{self.prefix}ledger:{{{message_key}}}:delivered"

    def relay_alive(self, identity: str) -> str:
        """A relay process's liveness (ledger Rule 7); the identity hashed (it names a host).
        A single key, read with ``get_many`` (never MGET: the writers' keys have no common
        slot)."""
        return f"{self.prefix}alive:{hashlib.sha256(identity.encode()).hexdigest()[:16]}"

    # Audit trail: per bucket, one stream of decision records and its secondary indexes; a
    # record lives in the bucket of its message.
    def audit_buckets(self) -> range:
        return range(AUDIT_BUCKETS)

    def audit_streams(self) -> list[str]:
        """Every bucket's stream, in bucket order (built once per prefix)."""
        return list(_streams(self.prefix))

    def audit_bucket(self, message_key: str) -> int:
        return bucket_of(message_key, AUDIT_BUCKETS)

    def _audit(self, bucket: int) -> str:
        return f"{self.prefix}audit:{{{spread_tags(AUDIT_BUCKETS, 'a')[bucket]}}}"

    def audit_stream(self, bucket: int) -> str:
        return f"{self._audit(bucket)}:log"

    def audit_by_message(self, message_key: str) -> str:
        """Sorted set of the message's stream ids, scored by their millisecond."""
        return f"{self._audit(self.audit_bucket(message_key))}:msg:{message_key}"

    def audit_ids(self, bucket: int) -> str:
        """Hash record id -> stream id: what the write script checks for exactly-once."""
        return f"{self._audit(bucket)}:ids"

    def audit_by_rcpt(self, bucket: int, rkey: str) -> str:
        """The recipient's records among the bucket's messages (fan out over the buckets)."""
        return f"{self._audit(bucket)}:rcpt:{rkey}"

    # Audit per-day counts, written by the audit write script with each record
    # (``audit_counts`` describes the layout): one set of four per bucket, under its tag.
    def audit_counts(self, bucket: int) -> str:
        """Hash ``<day>|<controller>|<dimension>`` -> count."""
        return f"{self._audit(bucket)}:counts"

    def audit_count_dims(self, bucket: int) -> str:
        """Set of the ``<controller>|<dimension>`` fields ever counted."""
        return f"{self._audit(bucket)}:count-dims"

    def audit_count_days(self, bucket: int) -> str:
        """Sorted set of the day numbers that have counts (for retention)."""
        return f"{self._audit(bucket)}:count-days"

    def audit_without_consent(self, bucket: int) -> str:
        """Sorted set of stream ids of records tracked without consent, scored by time."""
        return f"{self._audit(bucket)}:without-consent"

    # Links minted into messages: gateway/minimise targets and single-use form nonces.
    def gateway_link(self, link_id: str) -> str:
        return f"{self.prefix}gw:{link_id}"

    def form_nonce(self, nonce: str) -> str:
        return f"{self.prefix}nonce:{nonce}"

    # Deliverability minimisation: only the day of the last open per recipient.
    def last_open_buckets(self) -> range:
        return range(OPEN_BUCKETS)

    def last_open(self, rkey: str) -> str:
        """Sorted set rkey -> day number (days since 1970-01-01) of the last open: the one of
        the recipient's bucket."""
        return self.last_open_bucket(bucket_of(rkey, OPEN_BUCKETS))

    def last_open_bucket(self, bucket: int) -> str:
        return f"{self.prefix}lastopen:{{{spread_tags(OPEN_BUCKETS, 'o')[bucket]}}}"

    # Retention: the relay process holding this key runs the daily consent scan.
    def retention_lock(self) -> str:
        return f"{self.prefix}retention:lock"

    # Consent store scans (``relay consent verify`` without an address, retention, exports):
    # match patterns whose ``*`` is the recipient key (``tag_of`` reads it back). A pattern
    # matches one controller's keys only: the others end with another ``:<scope>``.
    def consent_events_match(self, controller: str = "") -> str:
        return self.consent_events("*", controller)

    def consent_state_match(self, controller: str = "") -> str:
        return self.consent_state("*", controller)

    # Recipient side (web pages): the address behind a recipient key, so that a withdrawal or
    # a choice made through a link (which carries only the rkey) is recorded with its address.
    # Written by the pipeline when it mints links for the recipient; expires with the links.
    def recipient_address(self, rkey: str) -> str:
        return f"{self.prefix}rcpt:{{{rkey}}}:addr"

    # The wording of each notice a page showed, by its hash, so that an auditor can read the
    # text behind the ``notice.hash`` of a proof. Written once (SET NX), never expires.
    def notice_text(self, notice_hash: str) -> str:
        return f"{self.prefix}notice:{notice_hash}"

    @staticmethod
    def tag_of(key: str) -> str:
        """The hash tag of a key (the recipient key of a consent key)."""
        return key.partition("{")[2].partition("}")[0]


def _scope(controller: str) -> str:
    return f":{controller}" if controller else ""


@dataclass(frozen=True, slots=True)
class LegacyKeys:
    """The key names of relays before hash tags (read by ``layout_migrate`` only)."""

    prefix: str = "relay:"

    def consent_match(self, kind: str) -> str:
        """``consent:events:*`` or ``consent:state:*``; the rest is ``[<scope>:]<rkey>``."""
        return f"{self.prefix}consent:{kind}:*"

    def consent_imported_match(self) -> str:
        return f"{self.prefix}consent:imported*"

    def scope_of_imported(self, key: str) -> str:
        return key[len(f"{self.prefix}consent:imported") :].lstrip(":")

    def delivered_match(self) -> str:
        return f"{self.prefix}delivered:*"

    def address_match(self) -> str:
        return f"{self.prefix}rcpt:addr:*"

    def last_open(self) -> str:
        return f"{self.prefix}lastopen"

    def audit_stream(self) -> str:
        return f"{self.prefix}audit:log"

    def audit_singles(self) -> list[str]:
        """The audit keys that are one of a kind: stream, counts and their indexes."""
        names = ("log", "counts", "count-dims", "count-days", "without-consent")
        return [f"{self.prefix}audit:{name}" for name in names]

    def audit_index_matches(self) -> list[str]:
        return [f"{self.prefix}audit:msg:*", f"{self.prefix}audit:rcpt:*"]

    def markers(self) -> list[str]:
        """Keys any relay with data had (one ``EXISTS`` tells an old layout is present)."""
        return [
            self.audit_stream(), self.last_open(), f"{self.prefix}consent:imported",
            f"{self.prefix}audit:counts",
        ]  # fmt: skip
