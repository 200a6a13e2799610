"""A private Postfix instance for tests and benchmarks: its own config, queue and log, on loopback.

``PostfixInstance`` writes ``main.cf`` and ``master.cf`` into a directory of its own, starts the
Debian ``postfix`` binaries with ``postfix -c DIR start``, waits until its smtpd answers with a
220 banner, and stops it again (``stop``, then ``abort`` and a kill of the master if needed).

Rule 1: nothing outside ``tmp_dir`` is read or written: config, queue, data directory and the
        log file (``maillog_file``, written by ``postlogd``) all live under it; the system
        Postfix (``/etc/postfix``) is never started, stopped or reconfigured.
Rule 2: only loopback: ``inet_interfaces = 127.0.0.1``, every smtpd in ``master.cf`` is bound to
        ``127.0.0.1:<port>``, ``mynetworks = 127.0.0.0/8``; the caller chooses the ports.
Rule 3: every wait is bounded, and ``stop()`` is safe to call at any time, twice, or after a
        failed start, so a test can always call it from ``finally`` or a fixture's teardown.
Rule 4: the one change outside ``tmp_dir``: its ancestors get search permission for others
        (``o+x``, never read) where they lack it, because Postfix's daemons open their data
        directory by absolute path as the ``postfix`` user, and pytest makes
        ``/tmp/pytest-of-USER`` mode 0700 (pytest puts the mode back itself at its next run).
Rule 5: Postfix never delivers locally: ``mydestination`` is empty, every message goes to
        ``relayhost`` (and first through ``content_filter`` when one is given).

Two placements are supported (docs/postfix.md explains them for operators):

- smarthost: apps -> smtpd on ``listen_port`` -> queue -> ``relayhost``;
- after-queue content filter: apps -> smtpd on ``listen_port`` -> queue -> ``content_filter``
  (the ``scan`` transport: an smtp client that sends XFORWARD) -> filter -> smtpd on
  ``reinjection_port`` (no filter, no checks) -> queue -> ``relayhost``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"


def postfix_available() -> bool:
    """True when Debian's postfix binaries (postfix, postconf, postlogd) are installed."""
    return (
        Path(POSTFIX).exists()
        and Path(POSTCONF).exists()
        and Path("/usr/lib/postfix/sbin/postlogd").exists()
    )


def postfix_version() -> str:
    out = subprocess.run(
        [POSTCONF, "-d", "-h", "mail_version"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


class PostfixError(RuntimeError):
    """Postfix did not start, did not answer, or did not stop; the message carries its log."""


# master.cf services every instance needs. Columns: service type private unpriv chroot wakeup
# maxproc command. Chroot is off ("n") everywhere: a chroot would need copies of /etc files
# inside the private queue directory.
_BASE_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

# The after-queue filter transport (FILTER_README, "advanced content filter"): an smtp client
# that sends XFORWARD when the filter announces it (so the re-injection smtpd logs the original
# client), never converts 8-bit MIME (the filter must see the bytes the app sent), and tells
# the filter who the original sender and client were.
_SCAN_SERVICE = """\
scan      unix  -       -       n       -       {concurrency}       smtp
  -o syslog_name=postfix/scan
  -o smtp_send_xforward_command=yes
  -o disable_mime_output_conversion=yes
  -o smtp_generic_maps=
"""

# The re-injection smtpd: accepts only from loopback, applies no content filter (else a loop),
# repeats none of the checks the first smtpd already made, and trusts XFORWARD from loopback.
_REINJECTION_SERVICE = """\
127.0.0.1:{port} inet n  -       n       -       -       smtpd
  -o syslog_name=postfix/reinject
  -o content_filter=
  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters
  -o smtpd_helo_restrictions=
  -o smtpd_client_restrictions=
  -o smtpd_sender_restrictions=
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
  -o smtpd_relay_restrictions=permit_mynetworks,reject
  -o mynetworks=127.0.0.0/8
  -o smtpd_authorized_xforward_hosts=127.0.0.0/8
"""


class PostfixInstance:
    """A private Postfix on loopback; use as a context manager or call start()/stop().

    ``relayhost`` and ``content_filter`` are in Postfix syntax: ``[127.0.0.1]:2525`` and
    ``scan:[127.0.0.1]:2525`` (``scan`` is the XFORWARD-sending transport defined here; any
    other transport of master.cf, such as ``smtp``, works too). A content filter needs a
    ``reinjection_port``. ``main`` adds or overrides main.cf parameters.
    """

    def __init__(
        self,
        tmp_dir: Path,
        *,
        listen_port: int,
        relayhost: str,
        content_filter: str | None = None,
        reinjection_port: int | None = None,
        main: Mapping[str, str] | None = None,
        filter_concurrency: int = 10,
    ) -> None:
        if (content_filter is None) != (reinjection_port is None):
            raise ValueError("content_filter and reinjection_port go together")
        self.dir = Path(tmp_dir)
        self.config_dir = self.dir / "etc"
        self.queue_dir = self.dir / "spool"
        self.data_dir = self.dir / "lib"
        self.log_file = self.dir / "maillog"
        self.listen_port = listen_port
        self.relayhost = relayhost
        self.content_filter = content_filter
        self.reinjection_port = reinjection_port
        self.extra_main = dict(main or {})
        self.filter_concurrency = filter_concurrency
        self.started = False

    # --- configuration --------------------------------------------------------------------

    def main_cf(self) -> dict[str, str]:
        params = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "postfix.test",
            "mydomain": "postfix.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_recipient_maps": "",
            "local_transport": "error:no local delivery",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "relayhost": self.relayhost,
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "smtp_host_lookup": "native",
            "smtp_dns_support_level": "disabled",
            "maillog_file": str(self.log_file),
            "maillog_file_prefixes": str(self.dir),
            "biff": "no",
            "readme_directory": "no",
            "html_directory": "no",
            # A private instance must not wait on the host's DNS or on slow peers for long.
            "smtp_connect_timeout": "5s",
            "smtpd_banner": "$myhostname ESMTP private-postfix",
            # Mail that cannot be delivered at once is retried quickly and bounced within
            # minutes, not days: tests want an answer, not a week-long queue.
            "minimal_backoff_time": "2s",
            "maximal_backoff_time": "10s",
            "queue_run_delay": "2s",
            "maximal_queue_lifetime": "5m",
            "bounce_queue_lifetime": "5m",
            "in_flow_delay": "0",
            "message_size_limit": str(50 * 1024 * 1024),
        }
        if self.content_filter is not None:
            params["content_filter"] = self.content_filter
        params.update(self.extra_main)
        return params

    def master_cf(self) -> str:
        text = f"127.0.0.1:{self.listen_port} inet n  -       n       -       -       smtpd\n"
        text += _BASE_SERVICES
        if self.content_filter is not None:
            text += _SCAN_SERVICE.format(concurrency=self.filter_concurrency)
            text += _REINJECTION_SERVICE.format(port=self.reinjection_port)
        return text

    def write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The postfix user opens its data directory (master.lock, caches) by absolute path.
        shutil.chown(self.data_dir, user="postfix")
        _allow_search(self.data_dir)
        lines = [f"{key} = {value}" for key, value in self.main_cf().items()]
        (self.config_dir / "main.cf").write_text("\n".join(lines) + "\n")
        (self.config_dir / "master.cf").write_text(self.master_cf())

    # --- lifecycle ------------------------------------------------------------------------

    def _postfix(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [POSTFIX, "-c", str(self.config_dir), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, timeout: float = 30) -> PostfixInstance:
        """Write the config, start the master, wait for the smtpd banners; raise PostfixError."""
        self.write_config()
        self.started = True  # from here on, stop() has something to clean up
        result = self._postfix("start", timeout=timeout)
        if result.returncode != 0:
            self.stop()
            raise PostfixError(
                f"postfix start failed ({result.returncode}): {result.stderr}\n{self.log_text()}"
            )
        ports = [self.listen_port]
        if self.reinjection_port is not None:
            ports.append(self.reinjection_port)
        deadline = time.monotonic() + timeout
        for port in ports:
            if not _wait_banner(port, deadline):
                self.stop()
                raise PostfixError(f"postfix smtpd on port {port} did not answer:\n{self.tail()}")
        return self

    def master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self, timeout: float = 20) -> None:
        """Stop the instance: a clean ``stop``, else ``abort``, else SIGKILL to the master."""
        if not self.started:
            return
        self.started = False
        pid = self.master_pid()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._postfix("stop", timeout=timeout)
        if pid is not None and _wait_gone(pid, 5):
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._postfix("abort", timeout=timeout)
        if pid is not None and not _wait_gone(pid, 5):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 5)

    def flush(self) -> None:
        """Ask the queue manager to retry deferred mail now (``postfix flush``)."""
        self._postfix("flush", timeout=30)

    def __enter__(self) -> PostfixInstance:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- the log --------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_lines(self, pattern: str) -> list[str]:
        """Log lines that match the regular expression ``pattern``."""
        regex = re.compile(pattern)
        return [line for line in self.log_text().splitlines() if regex.search(line)]

    def deliveries(self, status: str = "sent") -> list[str]:
        """Delivery lines (``to=<...>, relay=..., status=sent``) with the given status."""
        return self.log_lines(rf"\bstatus={re.escape(status)}\b")

    def wait_for_log(self, pattern: str, timeout: float = 30) -> str:
        """The first log line matching ``pattern``, waiting at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.log_lines(pattern)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise PostfixError(f"no log line matches {pattern!r}:\n{self.tail()}")
            time.sleep(0.1)

    def queue_ids(self) -> Iterator[str]:
        """Queue ids of the messages still in the queue (``mailq`` through showq)."""
        out = subprocess.run(
            ["/usr/sbin/postqueue", "-c", str(self.config_dir), "-j"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        for match in re.finditer(r'"queue_id": "([0-9A-F]+)"', out.stdout):
            yield match.group(1)


def _wait_banner(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.settimeout(2)
                if sock.recv(256).startswith(b"220"):
                    sock.sendall(b"QUIT\r\n")
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A master re-parented to a PID 1 that does not reap stays a zombie: it is gone too.
        if _is_zombie(pid):
            return True
        time.sleep(0.1)
    return False


def _is_zombie(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return bool(re.search(r"^State:\s+Z", status, re.MULTILINE))


def _allow_search(path: Path) -> None:
    """Give others search (not read) permission on ``path``'s ancestors that lack it."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001 and parent.stat().st_uid == os.geteuid():
            parent.chmod((mode & 0o7777) | 0o001)
