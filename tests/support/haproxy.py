"""A real HAProxy on loopback in front of a test's web server, and raw HTTP from chosen sources.

Every address of 127.0.0.0/8 is the local host on Linux: a client bound to 127.0.0.2 and one
bound to 127.0.0.3 are two visitors to HAProxy, and HAProxy's own connections to the relay
leave from ``PROXY_SOURCE`` (``source`` on its server line), an address nothing else uses, so
that whatever the relay sees from there came through HAProxy. No test here.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from relay.store.embedded import free_port

PROXY_SOURCE = "127.0.0.9"


def http_mode(listen: int, relay: int, extra: str = "option forwardfor") -> str:
    """HTTP mode: HAProxy parses requests and adds ``X-Forwarded-For`` (the deploy example's)."""
    return f"""
frontend web_in
    mode http
    bind 127.0.0.1:{listen}
    default_backend relays_web
backend relays_web
    mode http
    {extra}
    server relay1 127.0.0.1:{relay} source {PROXY_SOURCE}
"""


def tcp_mode(listen: int, relay: int) -> str:
    """TCP mode with a PROXY protocol v2 header on every connection to the relay."""
    return f"""
frontend web_in
    mode tcp
    bind 127.0.0.1:{listen}
    default_backend relays_web
backend relays_web
    mode tcp
    server relay1 127.0.0.1:{relay} source {PROXY_SOURCE} send-proxy-v2
"""


@contextmanager
def haproxy(binary: str, tmp: Path, section: str, listen: int) -> Iterator[int]:
    """HAProxy running ``section`` until the block ends; yields the port it listens on."""
    config = tmp / f"haproxy-{listen}.cfg"
    config.write_text(
        "global\n    maxconn 200\n"
        "defaults\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n"
        + section
    )
    checked = subprocess.run(
        [binary, "-c", "-f", str(config)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    log = (tmp / f"haproxy-{listen}.log").open("wb")
    process = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", listen), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("HAProxy did not start") from None
                time.sleep(0.05)
        yield listen
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def connect(port: int, source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_answer(sock: socket.socket) -> Answer:
    """One HTTP answer read until the server closes (requests say ``Connection: close``)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(lines[0].split()[1]), headers, body)


def exchange(port: int, source: str, request: bytes) -> Answer:
    """``request`` exactly as written, from ``source``, and the answer."""
    with connect(port, source) as sock:
        sock.sendall(request)
        return read_answer(sock)


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: links.example", *headers, "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def post(path: str, body: str, *headers: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: links.example",
        "Content-Type: application/x-www-form-urlencoded",
        f"Content-Length: {len(body.encode())}",
        *headers,
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("latin-1")


__all__ = ["PROXY_SOURCE", "exchange", "free_port", "get", "haproxy", "http_mode", "post"]
