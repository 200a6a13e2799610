"""Every SMTP reply the relay sends of its own, named, with an enhanced status code and an id.

Rule 1: no other module writes an SMTP reply string; ``receive.py`` sends ``Reply.text``.
Rule 2: each reply has a unique id (R-xxx) that is also logged, so an operator can find the line
        of the log that explains what a client was told.
Rule 3: temporary conditions are 4xx (the client keeps the message and retries); only what will
        never succeed is 5xx.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    enhanced: str
    message: str
    id: str

    @property
    def text(self) -> str:
        return f"{self.code} {self.enhanced} {self.message} [{self.id}]"

    def with_detail(self, detail: str) -> Reply:
        return Reply(self.code, self.enhanced, f"{self.message}: {detail}", self.id)

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500


OK_QUEUED = Reply(250, "2.0.0", "OK: accepted by upstream", "R-001")
OK_SENDER = Reply(250, "2.1.0", "Sender OK", "R-002")
OK_RCPT = Reply(250, "2.1.5", "Recipient OK", "R-003")
OK_XFORWARD = Reply(250, "2.0.0", "Ok", "R-004")

RELAY_DENIED = Reply(554, "5.7.1", "Relaying denied: client not allowed", "R-101")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required", "R-102")
TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed limit", "R-103")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long (RFC 5321 4.5.3.1.6: 1000 octets)", "R-116")
BAD_MIME = Reply(554, "5.6.0", "Malformed message refused", "R-104")
SIGNED_REFUSED = Reply(554, "5.6.0", "Signed or encrypted message cannot be filtered", "R-105")
BAD_ADDRESS = Reply(553, "5.1.3", "Bad address syntax", "R-106")
BARE_LF = Reply(
    554, "5.6.0", "Dot line with a bare CR or LF refused (SMTP smuggling, RFC 5321 2.3.8)", "R-107"
)
NO_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients", "R-108")
UPSTREAM_REJECTED = Reply(554, "5.0.0", "Upstream refused every recipient", "R-109")
REASK_REFUSED = Reply(
    550, "5.7.1", "Consent request refused: recipient may not be asked again", "R-110"
)
NO_CONTROLLER = Reply(
    550, "5.7.1", "Consent request refused: no controller is configured for its From domain",
    "R-130",
)  # fmt: skip
BAD_CATEGORY = Reply(554, "5.6.0", "Unknown X-Relay-Category", "R-111")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients", "R-112")
XFORWARD_DENIED = Reply(550, "5.7.0", "XFORWARD: insufficient authorization", "R-113")
XFORWARD_SYNTAX = Reply(
    501,
    "5.5.4",
    "Syntax: XFORWARD attribute=value... (NAME ADDR PORT PROTO HELO IDENT SOURCE)",
    "R-114",
)
XFORWARD_IN_TRANSACTION = Reply(503, "5.5.1", "XFORWARD: MAIL transaction in progress", "R-115")
OK_DUPLICATE_RCPT = Reply(250, "2.1.5", "Recipient OK (already given: delivered once)", "R-005")
BAD_SENDER = Reply(553, "5.1.7", "Bad sender address syntax", "R-118")
NON_ASCII_ADDRESS = Reply(
    553, "5.6.7", "Non-ASCII address without SMTPUTF8 (RFC 6531 3.4)", "R-119"
)
BAD_PARAMETER = Reply(501, "5.5.4", "Bad parameter", "R-120")
UNKNOWN_PARAMETER = Reply(555, "5.5.4", "Parameter not recognised or not implemented", "R-121")
MAIL_SYNTAX = Reply(501, "5.5.2", "Syntax: MAIL FROM:<address> [parameters]", "R-122")
RCPT_SYNTAX = Reply(501, "5.5.2", "Syntax: RCPT TO:<address> [parameters]", "R-123")
NESTED_MAIL = Reply(503, "5.5.1", "Nested MAIL command", "R-124")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command first", "R-125")
NUL_IN_DATA = Reply(
    554, "5.6.0", "NUL octet in message data is not allowed (RFC 5322 2.3, RFC 6152)", "R-117"
)
# Issue 10: a tracker without a basis never reaches a recipient; a consent request carries no
# other tracking (recommendation 2.1, 4.2).
SIGNED_NO_BASIS = Reply(
    550, "5.7.1", "Not delivered: signed or encrypted content cannot be modified", "R-140"
)
CONSENT_REQUEST_TRACKED = Reply(
    554, "5.7.1", "Consent request refused: only the consent link may be tracked", "R-141"
)

TEMP_UPSTREAM = Reply(451, "4.4.1", "Upstream temporarily unavailable, try again later", "R-201")
TEMP_INTERNAL = Reply(451, "4.3.0", "Internal error, try again later", "R-202")
TEMP_REDIS = Reply(451, "4.3.0", "Consent store unavailable, try again later", "R-203")
TEMP_LINKS = Reply(
    451, "4.3.0", "Could not store the recipients' links, nothing sent: try again later", "R-230"
)
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, try again later", "R-204")
TEMP_PARTIAL = Reply(
    451, "4.4.1", "Some recipients delivered, others deferred: retry, no duplicates", "R-205"
)
TIMEOUT = Reply(421, "4.4.2", "Timeout, closing connection", "R-206")
TOO_MANY_CONNECTIONS = Reply(
    421, "4.7.0", "Too many connections (from your address), try again later", "R-208"
)
RATE_LIMITED = Reply(
    451, "4.7.0", "Too many messages from your address, slow down and try again later", "R-207"
)

# The relay's own answers for one recipient on the way out (relay/outbound): they stand where
# the upstream's reply would, in the audit record, the ledger and failure notices.
OUT_UNREACHABLE = Reply(451, "4.4.1", "Upstream unreachable", "R-301")
OUT_LOST = Reply(451, "4.4.2", "Upstream connection lost before the message was sent", "R-302")
OUT_LOST_AFTER_DATA = Reply(
    451, "4.4.2", "Upstream connection lost after the message was sent (RFC 1047)", "R-303"
)
OUT_TLS = Reply(451, "4.7.5", "Upstream TLS failed", "R-304")
OUT_TLS_MISSING = Reply(451, "4.7.4", "Upstream does not offer STARTTLS (tls = required)", "R-305")
OUT_AUTH = Reply(451, "4.7.0", "Upstream refused the relay's credentials", "R-306")
OUT_SMTPUTF8_ADDRESS = Reply(
    553, "5.6.7", "Non-ASCII address, and the upstream does not offer SMTPUTF8 (RFC 6531)", "R-307"
)
OUT_SMTPUTF8_HEADER = Reply(
    554, "5.6.9", "UTF-8 header message, and the upstream does not offer SMTPUTF8", "R-308"
)
OUT_8BIT = Reply(
    554, "5.6.3", "8-bit message cannot be converted for an upstream without 8BITMIME", "R-309"
)
OUT_BAD_RCPT = Reply(553, "5.1.3", "Recipient address cannot be written to the upstream", "R-310")
OUT_BAD_SENDER = Reply(553, "5.1.7", "Sender address cannot be written to the upstream", "R-311")
OUT_NUL = Reply(554, "5.6.0", "Message contains a NUL byte (RFC 5321 2.3.8)", "R-312")
OUT_LINE_ENDING = Reply(
    451, "4.3.0", "Internal error: rendered message has a bare CR or LF, not sent", "R-313"
)
OUT_INTERNAL = Reply(451, "4.3.0", "Internal error while sending upstream", "R-314")
OUT_PROTOCOL = Reply(451, "4.4.2", "Upstream broke the SMTP protocol", "R-315")
OUT_OUTBOX = Reply(451, "4.3.0", "Outbox not writable", "R-316")
