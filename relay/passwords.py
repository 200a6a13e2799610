"""Password hashes for SMTP AUTH: ``[smtp.auth] users`` values -> verified logins.

Input: a password (bytes) and a stored hash ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``.
Output: whether they match.

Rule 1: only scrypt (``hashlib.scrypt``) hashes are accepted; a value in any other format is a
        settings error at start-up (``check_hash``), never a login that silently fails.
Rule 2: the comparison is constant-time (``hmac.compare_digest``), and an unknown user costs
        the same scrypt work as a known one, so timing does not tell which users exist.
Rule 3: this module is pure and blocking (scrypt takes tens of milliseconds on purpose):
        ``receive.py`` runs ``verify_password`` in a thread, never in the event loop.
Rule 4: passwords and hashes are never logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass

SCHEME = "scrypt"
# RFC 7914 interactive parameters: about 16 MiB and a few tens of milliseconds per check.
DEFAULT_N = 2**14
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
# Upper bounds on what a configured hash may ask for, so a typo cannot exhaust memory.
MAX_N = 2**20
MAX_R = 32
MAX_P = 16


@dataclass(frozen=True, slots=True)
class ScryptHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def encode(self) -> str:
        salt = base64.b64encode(self.salt).decode()
        digest = base64.b64encode(self.digest).decode()
        return f"{SCHEME}${self.n}${self.r}${self.p}${salt}${digest}"


def _scrypt(password: bytes, n: int, r: int, p: int, salt: bytes, length: int) -> bytes:
    # hashlib's default maxmem (32 MiB) is below what larger n/r need: 128 * n * r * p bytes,
    # plus a margin for OpenSSL's own buffers.
    maxmem = 128 * n * r * (p + 1) + 1024 * 1024
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=length)


def check_hash(encoded: str) -> ScryptHash:
    """Parse a stored hash; ValueError says what is wrong (never the hash itself)."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise ValueError('must be "scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>" (relay hash-password)')
    _scheme, n_text, r_text, p_text, salt_text, digest_text = parts
    if not (n_text.isdigit() and r_text.isdigit() and p_text.isdigit()):
        raise ValueError("scrypt n, r and p must be integers")
    n, r, p = int(n_text), int(r_text), int(p_text)
    if n < 2 or n > MAX_N or n & (n - 1):
        raise ValueError(f"scrypt n must be a power of two between 2 and {MAX_N}")
    if not 1 <= r <= MAX_R or not 1 <= p <= MAX_P:
        raise ValueError(f"scrypt r must be 1..{MAX_R} and p 1..{MAX_P}")
    try:
        salt = base64.b64decode(salt_text, validate=True)
        digest = base64.b64decode(digest_text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("scrypt salt and hash must be base64") from None
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("scrypt salt (>= 8 bytes) or hash (>= 16 bytes) too short")
    return ScryptHash(n, r, p, salt, digest)


def hash_password(
    password: str | bytes,
    *,
    n: int = DEFAULT_N,
    r: int = DEFAULT_R,
    p: int = DEFAULT_P,
    salt: bytes | None = None,
) -> str:
    """A new ``scrypt$...`` hash of ``password`` with a random salt."""
    secret = password.encode() if isinstance(password, str) else password
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = _scrypt(secret, n, r, p, salt, HASH_BYTES)
    return check_hash(ScryptHash(n, r, p, salt, digest).encode()).encode()


# Verified against when the user is unknown, so that the answer takes as long (Rule 2).
_DUMMY = ScryptHash(DEFAULT_N, DEFAULT_R, DEFAULT_P, b"\0" * SALT_BYTES, b"\0" * HASH_BYTES)


def verify_password(password: bytes, stored: ScryptHash | None) -> bool:
    """True when ``password`` matches ``stored``; ``None`` (unknown user) is always False."""
    target = stored or _DUMMY
    candidate = _scrypt(password, target.n, target.r, target.p, target.salt, len(target.digest))
    return hmac.compare_digest(candidate, target.digest) and stored is not None


class UserTable:
    """The configured users, parsed once; ``verify`` is blocking (Rule 3)."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = {name: check_hash(value) for name, value in users.items()}

    def __bool__(self) -> bool:
        return bool(self._users)

    def verify(self, login: bytes, password: bytes) -> bool:
        try:
            name = login.decode("utf-8")
        except UnicodeDecodeError:
            name = ""
        return verify_password(password, self._users.get(name))
