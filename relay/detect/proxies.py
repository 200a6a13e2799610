"""Mail clients' image proxies: the URL they will fetch for an image they proxy.

Stage: detection (pure). Input: one fetchable image reference (URL, host, path). Output: the
same reference with the proxied URL's host and path, for classification only (the candidate
keeps the URL as written, so the rewrite edits what is in the message).

A message forwarded from a webmail, or pasted from one, carries its images as the webmail
rewrote them: Gmail's ``https://ci3.googleusercontent.com/proxy/<signature>#<original URL>``
(also ``/meips/``), Outlook's ``https://imgproxy-prod.services.web.outlook.com/proxy/?u=<the
original, percent-encoded>&t=...``. The proxy fetches the original when the image is shown, so
a tracker behind a proxy still learns of the open (the proxy hides the reader's address, not
the event): it is classified as the original would be. Shapes from forwarded messages in
github.com/rf-peixoto/phishing_pot (commit 8e207b5f465bf72c2326551b1a9b2ba67f3b4ef6).

Rule 1: only these two proxies' documented shapes are unwrapped, once (a proxy of a proxy is
        classified by its first inner URL); anything else is returned unchanged.
Rule 2: the identifying parameters of the original cannot be dropped from the proxy's URL
        (they are inside its signature or its ``u=``): a proxied tracker's are what carries the
        original (``carrier``), so ``strip_params`` leaves the proxy nothing to fetch rather
        than letting the identifier through.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from relay.detect.signatures import split_url
from relay.detect.verdicts import Ref

# Hosts that may be a proxy: the cheap test callers run before ``unwrapped``.
PROXY_SUFFIXES = ("googleusercontent.com", "outlook.com")
_GMAIL_HOST = re.compile(r"ci[0-9]{1,2}\.googleusercontent\.com\Z")
_GMAIL_PATH = ("/proxy/", "/meips/")
_OUTLOOK_HOST = re.compile(r"(?:[a-z0-9-]+\.)*services\.web\.outlook\.com\Z")
_OUTLOOK_U = re.compile(r"[?&]u=([^&#]+)")


def _inner(ref: Ref) -> str | None:
    host, path = ref.host, ref.path
    if _GMAIL_HOST.match(host) and path.startswith(_GMAIL_PATH):
        fragment = ref.url.partition("#")[2]
        return fragment if fragment[:4].lower() == "http" else None
    if _OUTLOOK_HOST.match(host) and path.startswith("/proxy/"):
        found = _OUTLOOK_U.search(path)
        return unquote(found.group(1)) if found else None
    return None


def carrier(ref: Ref) -> tuple[str, ...]:
    """Rule 2: the part of a proxy URL (``rewrite.strip_url`` notation) holding the original:
    Gmail's signed second path segment, Outlook's ``u`` parameter."""
    return ("path:2",) if _GMAIL_HOST.match(ref.host) else ("u",)


def unwrapped(ref: Ref) -> Ref:
    """``ref`` with the host, path and URL its proxy fetches, or ``ref`` itself (Rule 1).
    Callers test the host against ``PROXY_SUFFIXES`` first; ``_inner`` checks it in full."""
    inner = _inner(ref)
    split = split_url(inner) if inner else None
    if split is None or inner is None:
        return ref
    return ref._replace(url=inner, host=split[0], path=split[1])
