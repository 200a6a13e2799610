"""The values passed between pipeline stages: frozen dataclasses and string enums, never dicts.

Rule 1: every type here is immutable and picklable, so that a stage can run in a worker process.
Rule 2: enum values are the public ids of SPEC section 1 (purposes, categories, actions, bases,
        consent events); renaming one is a breaking change of the rule files, logs and JSON.
Rule 3: offsets are always half-open ``[start, end)``; byte offsets index the raw message,
        character offsets index a part's decoded text. The field name says which.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Purpose(StrEnum):
    """Why a tracker is there (recommendation section 3)."""

    DELIVERABILITY = "deliverability"
    CAMPAIGN_PERFORMANCE = "campaign_performance"
    CROSS_CONTEXT_PROFILING = "cross_context_profiling"
    FRAUD_DETECTION = "fraud_detection"
    AUTHENTICATION_SECURITY = "authentication_security"


class Category(StrEnum):
    """What kind of email a message is (SPEC section 1)."""

    TRANSACTIONAL = "transactional"
    AUTHENTICATION = "authentication"
    PUBLIC_SERVICE = "public_service"
    NEWSLETTER = "newsletter"
    MARKETING = "marketing"
    CONSENT_REQUEST = "consent_request"


class Action(StrEnum):
    """What the relay does to one tracker (SPEC section 1)."""

    KEEP = "keep"
    GATEWAY = "gateway"
    MINIMISE = "minimise"
    STRIP_PARAMS = "strip_params"
    NEUTRALISE = "neutralise"
    REMOVE = "remove"


# Actions after which the original tracker can still be reached by the recipient's client.
TRACKING_ACTIONS = frozenset({Action.KEEP, Action.GATEWAY})


class Basis(StrEnum):
    """The legal ground a decision rests on."""

    CONSENT = "consent"
    LEGACY = "legacy"
    EXEMPT = "exempt"
    NONE = "none"


class EventType(StrEnum):
    """Consent events, append-only per recipient (SPEC section 1)."""

    COLLECTED = "collected"
    INFORMED = "informed"
    OBJECTED = "objected"
    REQUESTED = "requested"
    GRANTED = "granted"
    REFUSED = "refused"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"


class ElementKind(StrEnum):
    """Where in the HTML a tracker URL was found."""

    IMG = "img"
    IMG_SRCSET = "img_srcset"
    SOURCE_SRCSET = "source_srcset"
    BACKGROUND_ATTR = "background"
    STYLE_ATTR = "style_attr"
    STYLE_BLOCK = "style_block"
    VML = "vml"
    AMP_IMG = "amp_img"
    INPUT_IMAGE = "input_image"
    OTHER = "other"


# ---------------------------------------------------------------------------------------------
# Envelope and parsed message


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the SMTP session told us about one message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    # ESMTP parameters of MAIL FROM as the client wrote them (ENVID is case-sensitive xtext).
    mail_options: tuple[str, ...] = ()
    # ESMTP parameters of each RCPT TO as written (DSN: NOTIFY=..., ORCPT=...), aligned with
    # ``rcpt_tos``; empty when none were given.
    rcpt_options: tuple[tuple[str, ...], ...] = ()
    client_ip: str = ""
    helo: str = ""
    auth_user: str | None = None
    # Postfix XFORWARD attributes (name upper-cased, value xtext-decoded) of the original
    # client, in the order received; passed on to an upstream that announces XFORWARD.
    xforward: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Header:
    """One header field as it appears in the raw bytes (continuation lines included)."""

    name: str  # as written, e.g. "Content-Type"
    value: str  # unfolded, decoded as latin-1/utf-8 for inspection only
    start: int  # byte offset of the first byte of the name
    end: int  # byte offset just past the terminating line ending


@dataclass(frozen=True, slots=True)
class Part:
    """One leaf MIME part, located in the raw message.

    ``text`` is the decoded body for the parts the relay may edit (text/html, text/plain,
    text/x-amp-html) and None otherwise. ``locked`` is True inside multipart/signed or
    multipart/encrypted (or application/pkcs7-mime): such a part is never modified.
    """

    index: int
    content_type: str  # lower case, e.g. "text/html"
    charset: str  # lower case, "" when not declared
    cte: str  # lower case transfer encoding: "7bit", "8bit", "binary", "quoted-printable", "base64"
    header_start: int
    body_start: int
    body_end: int
    text: str | None
    locked: bool = False
    newline: str = "\r\n"  # line ending used inside this part's body
    # The Python codec that produced ``text`` from the transfer-decoded bytes ("latin-1" when the
    # declared charset is unknown or did not decode), so that rewriting re-encodes exactly.
    codec: str = ""


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    raw: bytes
    headers: tuple[Header, ...]
    header_end: int  # byte offset where the body starts (after the blank line)
    parts: tuple[Part, ...]
    defects: tuple[str, ...] = ()
    # Regions the parser did not read (past its part or depth limit): never forwarded as is.
    unread: tuple[str, ...] = ()

    def header(self, name: str) -> str | None:
        """First value of a header, case-insensitively, or None."""
        lname = name.lower()
        for h in self.headers:
            if h.name.lower() == lname:
                return h.value
        return None

    def headers_named(self, name: str) -> tuple[Header, ...]:
        lname = name.lower()
        return tuple(h for h in self.headers if h.name.lower() == lname)


# ---------------------------------------------------------------------------------------------
# Detection


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Candidate:
    """One tracker found in one part. Offsets are character offsets in ``Part.text``.

    ``url_span`` covers exactly the URL as written in the source (entities included), so that a
    URL-changing action replaces those characters only. ``removal_span`` is the smallest unit
    whose deletion stops the request: the whole element for an <img>, one candidate of a srcset
    list (with its separating comma), one CSS declaration, one attribute. ``purpose_attr_span``
    is the ``data-relay-purpose`` attribute to delete on the way out, when present.
    """

    id: int  # index within the message's candidate list
    part_index: int
    url: str  # entities decoded, as a client would fetch it
    element: ElementKind
    element_text: str  # the tag or declaration as written, for auditors (truncated)
    rule: str  # signature or heuristic id
    vendor: str
    purpose: Purpose
    no_consent_action: Action
    identifying_params: tuple[str, ...]
    url_span: Span
    removal_span: Span
    width: int | None = None
    height: int | None = None
    purpose_attr_span: Span | None = None
    labelled: bool = False  # the app labelled it with data-relay-purpose
    # how it was found: "signature", "heuristic", "label" or "fail-closed" (detect.trackers)
    detected_by: str = ""


@dataclass(frozen=True, slots=True)
class Link:
    """A hyperlink (<a href>) reported, never touched. ``rule`` names a click-tracking rule."""

    part_index: int
    url: str
    rule: str | None


@dataclass(frozen=True, slots=True)
class Placeholder:
    """An app-written ``{{relay:...}}`` placeholder, to fill per recipient."""

    part_index: int
    name: str  # "withdraw_url", "preferences_url", "consent_url"
    span: Span


@dataclass(frozen=True, slots=True)
class Edit:
    """Replace ``span`` of part ``part_index``'s decoded text by ``replacement``.

    The rewrite stage applies edits back to front, re-encodes only the touched region of the
    part with its own transfer encoding, and splices the result into the raw bytes.
    """

    part_index: int
    span: Span
    replacement: str


# ---------------------------------------------------------------------------------------------
# Consent


@dataclass(frozen=True, slots=True)
class ConsentEvent:
    """One consent event with its proof (SPEC section 1). Append-only once recorded.

    ``source``: form_id, form_version, page, message_ref ...; ``notice``: id, version,
    language, hash; ``evidence``: ip, user_agent, token_id (where a person acted).
    ``id``, ``recorded_at`` and the hash chain are set by the store when it records the event.
    """

    event: EventType
    purposes: tuple[Purpose, ...]
    address: str
    occurred_at: datetime
    actor: str  # recipient, import, admin, system, api
    method: str  # checkbox, button, link_confirmation, import, api, relay
    source: Mapping[str, str] = field(default_factory=dict)
    notice: Mapping[str, str] = field(default_factory=dict)
    evidence: Mapping[str, str] = field(default_factory=dict)
    rules_digest: str = ""
    recorded_at: datetime | None = None
    id: str = ""
    # The controller (id) the event belongs to; "" = the only one (the store resolves it).
    controller: str = ""


@dataclass(frozen=True, slots=True)
class PurposeConsent:
    """The derived state of one purpose for one recipient."""

    state: EventType | None  # last decisive event (granted/refused/withdrawn/expired) or None
    at: datetime | None
    event_id: str | None
    # Version of the notice shown when the last decisive event was given (None: unknown). The
    # policy voids a grant given under another version when [consent] renew_on_notice_change.
    notice_version: str | None = None


@dataclass(frozen=True, slots=True)
class ConsentState:
    """What the consent store says about one recipient at decision time.

    ``available`` is False when the store could not be read: the policy then fails closed and
    treats every purpose as not consented.
    """

    recipient_key: str
    purposes: dict[Purpose, PurposeConsent] = field(default_factory=dict)
    collected_at: datetime | None = None
    informed_at: datetime | None = None
    objected: bool = False
    last_solicited_at: datetime | None = None  # last refused/withdrawn/requested (re-ask window)
    legacy_purposes: tuple[Purpose, ...] = ()
    available: bool = True
    event_ids: tuple[str, ...] = ()
    controller: str = ""  # the controller (id) this state is for


# ---------------------------------------------------------------------------------------------
# Decisions and output


@dataclass(frozen=True, slots=True)
class Decision:
    candidate_id: int
    action: Action
    basis: Basis
    policy_rule: str  # id of the decision-table row that matched
    consent_event_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RecipientPlan:
    """The decisions for one recipient; equal plans without per-recipient links share output."""

    rcpt: str
    recipient_key: str
    decisions: tuple[Decision, ...]
    footer: bool  # a withdrawal link must be present (a consent-based tracker stays)
    needs_links: bool  # output carries per-recipient URLs (gateway, minimise, footer, placeholders)


@dataclass(frozen=True, slots=True)
class GatewayLink:
    """A gateway or minimise URL minted for a message; the edge stores ``target`` by ``link_id``."""

    link_id: str
    target: str
    purpose: Purpose
    action: Action


@dataclass(frozen=True, slots=True)
class RenderedGroup:
    """One upstream transaction: recipients with byte-identical output."""

    rcpts: tuple[str, ...]
    data: bytes
    gateway_links: tuple[GatewayLink, ...] = ()
    esp_headers: tuple[tuple[str, str], ...] = ()
