"""``relay hash-password``: print a hash for ``[smtp.auth] users`` from a password on stdin.

Rule 1: the password is never an argument (it would show in ``ps`` and shell history): it is
        read from a terminal without echo (asked twice), or as the first line of a pipe.
Rule 2: only the hash is printed, on stdout, so ``relay hash-password > file`` works.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from relay.errors import RelayError
from relay.passwords import hash_password


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "hash-password",
        help="hash a password (read from stdin) for [smtp.auth] users or [audit_ui] users",
    )
    # Accepted like every command's (the hash does not depend on the settings).
    parser.add_argument("--config", metavar="FILE", help="TOML settings (not read)")
    parser.set_defaults(func=cmd_hash_password)


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise RelayError("hash-password: the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def cmd_hash_password(args: argparse.Namespace) -> int:
    password = _read_password()
    if not password:
        raise RelayError("hash-password: empty password")
    print(hash_password(password))
    return 0
