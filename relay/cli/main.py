"""The ``relay`` command: parse arguments, load settings, hand over to the right module.

Exit status (SPEC section 3): 0 done, 1 a check found problems, 2 bad usage or bad input.
Every error a user can cause is printed as one line naming what is wrong, never a traceback:
``RelayError`` carries its own sentence (file, key or address, and what to do); Redis that
cannot be reached and files that cannot be read are named as such; anything else is one
line with its type, and ``RELAY_DEBUG=1`` shows the traceback for a bug report.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from relay import __version__
from relay.cli import check as cli_check
from relay.errors import RelayError
from relay.settings import load_settings


def _register_others(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from relay.cli import audit as cli_audit
    from relay.cli import canary as cli_canary
    from relay.cli import consent as cli_consent
    from relay.cli import inactive as cli_inactive
    from relay.cli import init as cli_init
    from relay.cli import passwd as cli_passwd
    from relay.cli import rules as cli_rules
    from relay.cli import store as cli_store

    for module in (cli_consent, cli_audit, cli_rules, cli_inactive, cli_canary, cli_passwd):
        module.register(sub)
    cli_store.register(sub)
    cli_init.register(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay", description="consent-relay: lawful email tracking (CNIL 2026)"
    )
    parser.add_argument("--version", action="version", version=f"consent-relay {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", metavar="FILE", help="TOML settings (default: $RELAY_CONFIG, ./config.toml)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", parents=[common], help="run the SMTP relay and web endpoints")
    serve.add_argument("--workers", type=int, default=1, help="processes sharing the ports")
    serve.set_defaults(func=cmd_serve)

    cli_check.register(sub, common)

    _register_others(sub)
    return parser


def cmd_serve(args: argparse.Namespace) -> int:
    from relay.service import serve

    settings = load_settings(args.config)
    if args.workers < 1:
        raise RelayError("--workers must be at least 1")
    return serve(settings, args.workers)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "serve" and not logging.getLogger().handlers:
        # Warnings of the stages a verb runs, through the relay's masking formatter (serve
        # configures its own from the settings; an embedding program keeps its own).
        from relay.ops.logs import configure

        configure("WARNING", "text")
    try:
        status: int = args.func(args)
        return status
    except RelayError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if os.environ.get("RELAY_DEBUG") == "1":
            raise
        print(f"relay: {_describe(exc)}", file=sys.stderr)
        return 2


def _describe(exc: Exception) -> str:
    """One line for an error that is not a ``RelayError`` (see the module docstring)."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from relay.ops.logs import redact

    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return (
            f"redis: cannot reach the server ({redact(str(exc))}); check [redis] url, "
            "or start the relay first when it uses the embedded server"
        )
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return f"unexpected error: {type(exc).__name__}: {redact(str(exc))} (RELAY_DEBUG=1 shows more)"


if __name__ == "__main__":
    sys.exit(main())
