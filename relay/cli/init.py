"""``relay init``: write a configuration file from the documented example, with fresh secrets.

Rule 1: the secrets are generated here (``secrets.token_urlsafe``), never copied from the
        example: the example's link key is public, and links signed with it can be forged.
Rule 2: an existing file is never overwritten (exit 2 naming it); ``--force`` does.
Rule 3: the file is written with mode 0600 (it holds the keys) and every other line is the
        example's, so the comments that document each key travel with it.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
from importlib import resources
from pathlib import Path

from relay.errors import RelayError
from relay.settings import DEFAULT_CONFIG, EXAMPLE_LINK_KEY

_LINK_KEY = re.compile(r'^link_key = "[^"]*"$', re.MULTILINE)
_ADDRESS_KEY = re.compile(r'^address_key = "[^"]*"$', re.MULTILINE)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "init", help="write ./config.toml from the example, with freshly generated secrets"
    )
    parser.add_argument(
        "--config", metavar="FILE", help=f"file to write (default {DEFAULT_CONFIG})"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    parser.set_defaults(func=cmd_init)


def example_text() -> str:
    """The documented example configuration shipped with the package."""
    return resources.files("relay").joinpath("config.example.toml").read_text(encoding="utf-8")


def fresh_config(example: str) -> str:
    """The example with a new link key and a new address key (Rule 1)."""
    if EXAMPLE_LINK_KEY not in example or not _ADDRESS_KEY.search(example):
        raise RelayError("init: the packaged example has no [secrets] keys to fill in")
    text = _LINK_KEY.sub(f'link_key = "{secrets.token_urlsafe(32)}"', example, count=1)
    return _ADDRESS_KEY.sub(f'address_key = "{secrets.token_urlsafe(32)}"', text, count=1)


def cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.config or DEFAULT_CONFIG)
    if path.exists() and not args.force:
        raise RelayError(f"init: {path} exists already; keep it, or pass --force to replace it")
    text = fresh_config(example_text())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
    except OSError as exc:
        raise RelayError(f"init: {path}: cannot write: {exc.strerror}") from None
    print(f"wrote {path} (fresh secrets.link_key and secrets.address_key; keep it private)")
    return 0
