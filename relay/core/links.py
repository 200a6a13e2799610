"""Links: signed per-recipient tokens and the URLs that carry them.        pure

Input: a recipient key (never an address), a link kind, a message reference, a time.
Output: a URL under ``[web] public_url``; and, on the way back, the verified claims of a token.

Rule 1: a token is ``base64url(payload) "." base64url(HMAC-SHA256(key, "v1." payload)[:16])``.
        The payload is compact text: ``kind|key id|rkey|issued|expires|ref|extra|controller|
        lang`` (times in UNIX seconds, expires empty for none; controller and lang may be
        empty). It never holds an address: the rkey is a keyed hash, and message references
        are hashed here before they enter a token, because a Message-ID or an envelope sender
        can contain an address. Tokens minted before controllers existed have the first seven
        fields only; they verify with an empty controller (the one owning the older consent)
        and no language.
Rule 2: the key id names the key that signed: the current key signs, retired keys (kept in
        ``[secrets] retired_link_keys``) only verify, so keys rotate without breaking links in
        emails already sent.
Rule 3: verification checks, in this order, shape, key id, signature (constant-time), kind,
        expiry; each failure is a ``TokenError`` whose message is one word a page can show
        ("malformed", "unknown key", "forged", "wrong kind", "expired").
Rule 4: consent links expire within weeks (the recommendation reads an unanswered request as
        refusal); withdrawal and preference links live for years, as long as an old email can
        be re-opened; gateway and minimise links live as long as their stored target.
Rule 5: no I/O here: no clock (``now`` is a parameter), no Redis, no settings file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from relay.errors import TokenError
from relay.model import Purpose

KINDS = frozenset({"w", "p", "c", "g", "m"})
WITHDRAW, PREFERENCES, CONSENT, GATEWAY, MINIMISE = "w", "p", "c", "g", "m"

CONSENT_TTL = timedelta(days=30)
PAGE_TTL = timedelta(days=5 * 365 + 1)  # withdrawal and preference links
GATEWAY_TTL = timedelta(days=400)  # matches the lifetime of the stored gateway targets

MAC_BYTES = 16  # 128 bits: forging needs 2**128 tries; keeps URLs short
MAX_TOKEN_CHARS = 600  # anything longer is not ours: refuse before decoding
_VERSION = b"v1."
_SEP = "|"


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    # Strict alphabet check first: urlsafe_b64decode silently drops foreign characters, which
    # would let two different strings verify as the same token.
    if not text or any(ch not in _B64_ALPHABET for ch in text):
        raise TokenError("malformed")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("malformed") from None
    # The unused low bits of the last character would otherwise give several spellings of
    # one token; only the canonical spelling is ours.
    if _b64e(data) != text:
        raise TokenError("malformed")
    return data


_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def short_hash(*parts: str, chars: int = 16) -> str:
    """A stable, non-reversible short id (base64url of SHA-256) of some strings."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return _b64e(h.digest())[:chars]


def message_ref_id(message_ref: str) -> str:
    """What a token carries for a message: a hash of its Message-ID (or envelope sender).

    An auditor holding the Message-ID recomputes this to find the proofs a message led to.
    """
    return short_hash("msg", message_ref)


def gateway_link_id(message_id: str, url: str) -> str:
    """Stable short id (96 bits) of one original tracker URL in one message."""
    return short_hash("gw", message_id, url)


@dataclass(frozen=True, slots=True)
class TokenClaims:
    kind: str
    key_id: str
    rkey: str
    issued_at: datetime
    expires_at: datetime | None
    ref: str  # message reference id (pages) or link id (gateway, minimise)
    extra: str  # purpose (gateway) or ""
    token_id: str  # short id of this very token, for proofs and nonce binding
    controller: str = ""  # the controller the link speaks for ("": the older consent's owner)
    lang: str = ""  # the email's language ("" when it declared none)


class SecretsLike(Protocol):
    @property
    def link_key(self) -> str: ...
    @property
    def link_key_id(self) -> str: ...
    @property
    def retired_link_keys(self) -> Mapping[str, str]: ...


def _ts(value: datetime) -> str:
    return str(int(value.timestamp()))


def _dt(text: str) -> datetime:
    if not text.isdigit() or len(text) > 12:
        raise TokenError("malformed")
    return datetime.fromtimestamp(int(text), UTC)


@dataclass(frozen=True)
class LinkSigner:
    """Signs with the current key; verifies with the current and the retired keys."""

    key_id: str
    key: bytes
    retired: Mapping[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("secrets.link_key: an empty key cannot sign links")
        for kid in (self.key_id, *self.retired):
            if not kid or _SEP in kid or "." in kid:
                raise ValueError(f"secrets: bad link key id {kid!r}")

    @classmethod
    def from_settings(cls, secrets: SecretsLike) -> LinkSigner:
        retired = {kid: key.encode() for kid, key in secrets.retired_link_keys.items()}
        return cls(secrets.link_key_id, secrets.link_key.encode(), retired)

    def _key(self, kid: str) -> bytes | None:
        if kid == self.key_id:
            return self.key
        return self.retired.get(kid)

    @staticmethod
    def _mac(key: bytes, payload_b64: str) -> bytes:
        return hmac.new(key, _VERSION + payload_b64.encode("ascii"), hashlib.sha256).digest()[
            :MAC_BYTES
        ]

    def mint(
        self,
        kind: str,
        rkey: str,
        *,
        ref: str = "",
        extra: str = "",
        ttl: timedelta | None,
        now: datetime,
        controller: str = "",
        lang: str = "",
    ) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown link kind {kind!r}")
        named = (("rkey", rkey), ("ref", ref), ("extra", extra), ("controller", controller),
                 ("lang", lang))  # fmt: skip
        for name, value in named:
            # The separator would shift fields, and '@' would mean someone passed an address.
            if _SEP in value or "@" in value:
                raise ValueError(f"link {name} must not contain '|' or '@'")
        expires = _ts(now + ttl) if ttl is not None else ""
        fields = [kind, self.key_id, rkey, _ts(now), expires, ref, extra]
        if controller or lang:
            fields += [controller, lang]
        payload = _SEP.join(fields)
        payload_b64 = _b64e(payload.encode("utf-8"))
        return payload_b64 + "." + _b64e(self._mac(self.key, payload_b64))

    def verify(self, token: str, *, kinds: set[str] | frozenset[str], now: datetime) -> TokenClaims:
        if len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
            raise TokenError("malformed")
        payload_b64, mac_b64 = token.split(".")
        mac = _b64d(mac_b64)
        try:
            fields = _b64d(payload_b64).decode("utf-8").split(_SEP)
        except UnicodeDecodeError:
            raise TokenError("malformed") from None
        if len(fields) == 7:
            fields += ["", ""]  # minted before tokens carried a controller and a language
        if len(fields) != 9:
            raise TokenError("malformed")
        kind, kid, rkey, issued, expires, ref, extra, controller, lang = fields
        key = self._key(kid)
        if key is None:
            raise TokenError("unknown key")
        if not hmac.compare_digest(mac, self._mac(key, payload_b64)):
            raise TokenError("forged")
        if kind not in kinds:
            raise TokenError("wrong kind")
        expires_at = _dt(expires) if expires else None
        if expires_at is not None and now >= expires_at:
            raise TokenError("expired")
        return TokenClaims(
            kind=kind,
            key_id=kid,
            rkey=rkey,
            issued_at=_dt(issued),
            expires_at=expires_at,
            ref=ref,
            extra=extra,
            token_id=_b64e(mac[:9]),
            controller=controller,
            lang=lang,
        )


class LinkMinter:
    """Builds the per-recipient URLs the pipeline writes into messages (and the pages link)."""

    def __init__(self, public_url: str, signer: LinkSigner) -> None:
        self.base = public_url.rstrip("/")
        self.signer = signer

    def _url(self, path: str, token: str) -> str:
        return f"{self.base}/{path}/{token}"

    def page_url(
        self,
        kind: str,
        rkey: str,
        message_ref: str,
        now: datetime,
        *,
        controller: str = "",
        lang: str = "",
        ref_id: str | None = None,
    ) -> str:
        """A withdrawal, preference or consent page URL (``ref_id``: an already hashed ref)."""
        ref = ref_id if ref_id is not None else message_ref_id(message_ref)
        ttl = CONSENT_TTL if kind == CONSENT else PAGE_TTL
        token = self.signer.mint(
            kind, rkey, ref=ref, ttl=ttl, now=now, controller=controller, lang=lang
        )
        return self._url(kind, token)

    def withdraw_url(
        self, rkey: str, message_ref: str, now: datetime, controller: str = "", lang: str = ""
    ) -> str:
        return self.page_url(WITHDRAW, rkey, message_ref, now, controller=controller, lang=lang)

    def preferences_url(
        self, rkey: str, message_ref: str, now: datetime, controller: str = "", lang: str = ""
    ) -> str:
        return self.page_url(PREFERENCES, rkey, message_ref, now, controller=controller, lang=lang)

    def consent_url(
        self, rkey: str, message_ref: str, now: datetime, controller: str = "", lang: str = ""
    ) -> str:
        return self.page_url(CONSENT, rkey, message_ref, now, controller=controller, lang=lang)

    def gateway_url(
        self, rkey: str, link_id: str, purpose: Purpose, now: datetime, controller: str = ""
    ) -> str:
        token = self.signer.mint(
            GATEWAY, rkey, ref=link_id, extra=purpose.value, ttl=GATEWAY_TTL, now=now,
            controller=controller,
        )  # fmt: skip
        return self._url(GATEWAY, token)

    def minimise_url(self, rkey: str, link_id: str, now: datetime, controller: str = "") -> str:
        token = self.signer.mint(
            MINIMISE, rkey, ref=link_id, ttl=GATEWAY_TTL, now=now, controller=controller
        )
        return self._url(MINIMISE, token)
