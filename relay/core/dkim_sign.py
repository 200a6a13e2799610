"""DKIM re-signing: a rendered message whose signed content changed -> a message that verifies.

Stage: the last one before forwarding, per recipient group. Input: the bytes the application
submitted, the bytes rendered for one group, and the DKIM key configured for the sender's
domain (or none, when the upstream signs). Output: the rendered bytes with the broken
``DKIM-Signature`` fields removed and, with a key, a new signature prepended.

Rule 1: pure given the key bytes: no file, DNS or clock access of its own (dkimpy reads the
        clock for ``t=``); key files are read by the caller through ``parse_key_table``'s
        ``read_key`` argument.
Rule 2: the conductor calls ``resign`` only when ``needs_resign`` says the relay broke a
        signature: it compares what each submitted signature covers (its canonicalised body,
        within ``l=``, and its ``h=`` fields) between the submitted and rendered bytes. A
        message the relay did not change keeps its signature untouched.
Rule 3: fields are removed by byte range and the new one is prepended; every other byte of
        the message stays as it was, line endings included (SPEC section 4, "Fidelity").
Rule 4: a signature is removed when it is broken (its body hash no longer matches, or, with
        the submitted bytes at hand, a field it signs changed), when it is for the key's own
        domain (the new one supersedes it), or, with ``replace_all``, always.
Rule 5: the new signature is rsa-sha256 with relaxed/relaxed canonicalisation, so that
        re-folding by a later hop does not break it; it signs only fields the application
        wrote that are meant to reach the recipient, never ``X-Relay-*`` nor an ESP's control
        fields (an ESP removes those, which would break the signature), and ``From`` once
        more than present, so that no second ``From`` can be added.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import getaddresses
from typing import cast

import dkim  # type: ignore[import-untyped]
from dkim.canonicalization import CanonicalizationPolicy  # type: ignore[import-untyped]
from dkim.crypto import parse_pem_private_key  # type: ignore[import-untyped]
from dkim.util import parse_tag_value  # type: ignore[import-untyped]

from relay.errors import RelayError, SettingsError

# RFC 6376 section 5.4.1's recommended fields, less the Resent-* and List-* fields an
# application does not write, plus List-Unsubscribe-Post: RFC 8058 section 4 requires it and
# List-Unsubscribe to be covered by a valid DKIM signature for one-click unsubscription.
DEFAULT_SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from",
    b"sender",
    b"reply-to",
    b"subject",
    b"date",
    b"message-id",
    b"to",
    b"cc",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
    b"content-id",
    b"content-description",
    b"in-reply-to",
    b"references",
    b"list-id",
    b"list-help",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"feedback-id",
)

# Fields a signature must never cover: RFC 6376 section 5.4's "SHOULD NOT" list (dkimpy refuses
# them), the relay's own request fields, and the ESP control fields of relay.core.esp.
_NEVER_SIGNED = frozenset(
    {
        b"return-path",
        b"received",
        b"comments",
        b"keywords",
        b"bcc",
        b"resent-bcc",
        b"dkim-signature",
        b"x-smtpapi",
        b"x-mailgun-track",
        b"x-mailgun-track-opens",
        b"x-mailgun-track-clicks",
        b"x-mailjet-trackopen",
        b"x-mailjet-trackclick",
        b"x-pm-trackopens",
        b"x-pm-tracklinks",
        b"x-ses-configuration-set",
    }
)

_SIGNATURE = b"dkim-signature"
# The hash of each signing algorithm (a=), for checking a body hash (bh=) without a key.
_HASHES: dict[bytes, str] = {
    b"rsa-sha256": "sha256",
    b"ed25519-sha256": "sha256",
    b"rsa-sha1": "sha1",
}
# A selector or domain: dot-separated labels of letters, digits, '-' and '_'.
_LABELS = re.compile(rb"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_-]+)*")


class DkimError(RelayError):
    """The rendered message cannot be signed (a header block dkimpy cannot read, no From).

    It carries the relay's default 4xx reply: the client keeps the message and retries while
    the operator fixes the key; a message is never sent with a signature the relay broke.
    """


@dataclass(frozen=True)
class DkimKey:
    """The signing key for one domain: ``d=`` and ``s=`` of the new signature."""

    domain: str
    selector: str
    private_key: bytes  # PEM RSA, PKCS#1 ("RSA PRIVATE KEY") or PKCS#8 ("PRIVATE KEY")

    def __repr__(self) -> str:  # never print the private key in a log or a traceback
        return f"DkimKey(domain={self.domain!r}, selector={self.selector!r})"


@dataclass(frozen=True)
class _Field:
    name: bytes  # lower case
    value: bytes  # as written after the colon, folding included
    start: int
    end: int  # past the line ending


def _header_fields(data: bytes) -> tuple[list[_Field], bytes]:
    """The header block's fields with byte ranges, and the line ending the message uses."""
    first = data.find(b"\n")
    newline = b"\n" if first > 0 and data[first - 1 : first] != b"\r" else b"\r\n"
    fields: list[_Field] = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end + 1
        line = data[pos:end]
        if line in (b"\r\n", b"\n"):
            break  # the blank line that ends the header block
        if line[:1] in (b" ", b"\t") and fields:
            last = fields[-1]
            fields[-1] = _Field(last.name, last.value + line, last.start, end)
        else:
            # A line that is no field (an mbox "From " line, a name with spaces) gets an empty
            # name: it is never removed, and dkimpy refuses to sign such a block.
            name, colon, value = line.partition(b":")
            valid = bool(colon) and bool(name) and name == name.strip()
            fields.append(_Field(name.lower() if valid else b"", value, pos, end))
        pos = end
    return fields, newline


def _tags(value: bytes) -> dict[bytes, bytes] | None:
    try:
        return cast(dict[bytes, bytes], parse_tag_value(value))
    except Exception:  # dkimpy raises its own InvalidTagValueList; any failure means unusable
        return None


def _canonical_body(data: bytes, tags: Mapping[bytes, bytes]) -> bytes | None:
    """The body as the signature ``tags`` hashed it, or None if its tags cannot say how."""
    try:
        policy = CanonicalizationPolicy.from_c_value(tags.get(b"c", b"simple/simple"))
        _, body = dkim.rfc822_parse(data)
        canonical = cast(bytes, policy.canonicalize_body(body))
        if b"l" in tags:
            canonical = canonical[: int(tags[b"l"])]
    except Exception:  # an unknown c= or a bad l= makes the signature unverifiable anyway
        return None
    return canonical


def _body_hash_matches(data: bytes, tags: Mapping[bytes, bytes]) -> bool:
    algorithm = _HASHES.get(tags.get(b"a", b"").strip().lower())
    canonical = _canonical_body(data, tags)
    if algorithm is None or canonical is None:
        return False
    expected = re.sub(rb"\s+", b"", tags.get(b"bh", b""))
    return base64.b64encode(hashlib.new(algorithm, canonical).digest()) == expected


def _signed_fields(data: bytes, tags: Mapping[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """The canonicalised fields ``h=`` selects, bottom-up per name as RFC 6376 5.4.2 says."""
    policy = CanonicalizationPolicy.from_c_value(tags.get(b"c", b"simple/simple"))
    headers, _ = dkim.rfc822_parse(data)
    names = [n.strip().lower() for n in tags.get(b"h", b"").split(b":") if n.strip()]
    selected = dkim.select_headers(headers, names)
    return cast(list[tuple[bytes, bytes]], policy.canonicalize_headers(selected))


def _broken(original: bytes, rendered: bytes, tags: Mapping[bytes, bytes]) -> bool:
    try:
        same_body = _canonical_body(original, tags) == _canonical_body(rendered, tags)
        same_fields = _signed_fields(original, tags) == _signed_fields(rendered, tags)
    except Exception:  # dkimpy cannot read the header block: the signature never verified
        return False
    return not (same_body and same_fields)


def needs_resign(original: bytes, rendered: bytes) -> bool:
    """Whether the relay's changes break a DKIM signature the application put on the message.

    False when the submitted message carries no signature, or when what every signature
    covers is unchanged (the relay only removed ``X-Relay-*`` fields it did not sign, say).
    """
    fields, _ = _header_fields(original)
    for f in fields:
        if f.name == _SIGNATURE:
            tags = _tags(f.value)
            if tags is not None and _broken(original, rendered, tags):
                return True
    return False


def resign(
    data: bytes,
    key: DkimKey | None,
    *,
    original: bytes | None = None,
    headers_to_sign: Sequence[bytes] = DEFAULT_SIGNED_HEADERS,
    replace_all: bool = False,
) -> bytes:
    """``data`` (the rendered bytes) with broken signatures removed and, with ``key``, re-signed.

    ``original``: the submitted bytes; with them a signature is also recognised as broken when
    a field it signs changed, without them only by its body hash (Rule 4). ``key`` None means
    the upstream signs: broken signatures are removed and none is added.
    ``headers_to_sign``: field names, signed when present (Rule 5).
    """
    fields, newline = _header_fields(data)
    domain = key.domain.lower().encode("ascii") if key else None
    drop = [
        f
        for f in fields
        if f.name == _SIGNATURE and _to_remove(f, data, domain, original, replace_all)
    ]
    out = bytearray(data)
    for f in reversed(drop):
        del out[f.start : f.end]
    stripped = bytes(out)
    if key is None:
        return stripped
    return _signature(stripped, key, headers_to_sign, newline) + stripped


def _to_remove(
    field: _Field, data: bytes, domain: bytes | None, original: bytes | None, replace_all: bool
) -> bool:
    """Rule 4, for one ``DKIM-Signature`` field of the rendered bytes ``data``."""
    tags = _tags(field.value)
    if replace_all or tags is None:
        return True  # an unparsable signature cannot verify: it only costs
    if domain is not None and tags.get(b"d", b"").strip().lower() == domain:
        return True
    if original is not None and _broken(original, data, tags):
        return True
    return not _body_hash_matches(data, tags)


def _signature(
    data: bytes, key: DkimKey, headers_to_sign: Sequence[bytes], newline: bytes
) -> bytes:
    fields, _ = _header_fields(data)
    present = {f.name for f in fields}
    wanted = [h.lower() for h in headers_to_sign]
    refused = sorted(h.decode("ascii", "replace") for h in set(wanted) & _NEVER_SIGNED)
    if refused:
        raise ValueError(f"these fields must not be signed: {', '.join(refused)}")
    if b"from" not in present:
        raise DkimError("the message has no From field, which DKIM must sign")
    include = list(dict.fromkeys(h for h in wanted if h in present))
    include.append(b"from")  # Rule 5: From once more than present
    try:
        header = dkim.sign(
            data,
            key.selector.encode("ascii"),
            key.domain.encode("ascii"),
            key.private_key,
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=b"rsa-sha256",
            include_headers=include,
            linesep=newline,
        )
    except dkim.DKIMException as exc:
        raise DkimError(f"DKIM signing for {key.domain} failed: {exc}") from None
    # dkimpy folds with ``linesep`` but may end the field with CRLF; Rule 3 wants the
    # message's own line ending everywhere.
    signature = cast(bytes, header).rstrip(b"\r\n")
    return signature.replace(b"\r\n", b"\n").replace(b"\n", newline) + newline


def from_domain(data: bytes) -> str | None:
    """The domain of the (first) ``From`` address, lower case, or None."""
    fields, _ = _header_fields(data)
    for f in fields:
        if f.name == b"from":
            value = re.sub(rb"\r?\n", b"", f.value).decode("utf-8", "replace")
            for _, address in getaddresses([value]):
                if "@" in address:
                    return address.rpartition("@")[2].strip().lower().rstrip(".")
            return None
    return None


def key_for(data: bytes, keys: Mapping[str, DkimKey]) -> DkimKey | None:
    """The key for the From domain, else for its nearest parent domain, else None.

    A parent's key still aligns with From under DMARC's relaxed alignment (RFC 7489 3.1.1).
    """
    domain = from_domain(data)
    while domain:
        if domain in keys:
            return keys[domain]
        _, dot, domain = domain.partition(".")
        if not dot or "." not in domain:
            return None  # never sign with a key for a bare top-level domain
    return None


def parse_key_table(
    table: Mapping[str, Mapping[str, str]],
    *,
    read_key: Callable[[str], bytes] | None = None,
) -> dict[str, DkimKey]:
    """``[dkim.keys]`` settings (domain -> {selector, key_file}) -> keys by lower-case domain.

    ``read_key`` reads a key file (the caller's I/O, Rule 1); a key may instead be written
    inline as ``private_key`` (PEM), which tests and secrets managers use. Every key is parsed
    here, so that a bad file stops start-up with the setting's name rather than a message
    failing later.
    """
    keys: dict[str, DkimKey] = {}
    for raw_domain, entry in table.items():
        where = f"dkim.keys.{raw_domain}"
        domain = raw_domain.strip().lower().rstrip(".")
        if not _LABELS.fullmatch(domain.encode("ascii", "replace")) or "." not in domain:
            raise SettingsError(f"{where}: not a domain name: {raw_domain!r}")
        unknown = set(entry) - {"selector", "key_file", "private_key"}
        if unknown:
            raise SettingsError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        selector = entry.get("selector", "")
        if not _LABELS.fullmatch(selector.encode("ascii", "replace")):
            raise SettingsError(f"{where}.selector: not a DKIM selector: {selector!r}")
        # dkimpy finds the PEM body between LF line breaks only; files saved with CRLF work too.
        pem = _key_bytes(where, entry, read_key).replace(b"\r\n", b"\n")
        try:
            parse_pem_private_key(pem)
        except Exception:  # dkimpy's UnparsableKeyError and ASN.1 errors alike
            raise SettingsError(f"{where}: not a PEM RSA private key") from None
        keys[domain] = DkimKey(domain, selector, pem)
    return keys


def _key_bytes(
    where: str, entry: Mapping[str, str], read_key: Callable[[str], bytes] | None
) -> bytes:
    if entry.get("private_key"):
        if entry.get("key_file"):
            raise SettingsError(f"{where}: set key_file or private_key, not both")
        return entry["private_key"].encode("ascii")
    path = entry.get("key_file", "")
    if not path:
        raise SettingsError(f"{where}.key_file: missing")
    if read_key is None:
        raise SettingsError(f"{where}.key_file: no reader given for key files")
    try:
        return read_key(path)
    except OSError as exc:
        raise SettingsError(f"{where}.key_file: cannot read {path}: {exc.strerror}") from None
