"""A private Exim 4 (Debian's exim4-daemon-light, unpacked, never installed) delivering to a port.

Debian's exim4 packages conflict with postfix, which the other tests need; ``.ci/run`` unpacks
them with ``dpkg-deb -x`` into ``EXIM_ROOT`` instead. The binary was built for Debian's paths
and user, so each run happens in a mount namespace of its own (``unshare -m``) in which
``/usr/sbin`` is the unpacked one and ``/etc/passwd`` names a ``Debian-exim`` user: nothing
outside the namespace changes, and the system's Postfix is never touched.

Rule 1: ``submit`` hands Exim one message on standard input (``-odi``: deliver in the
        foreground, the first attempt, now) with a configuration of our own (``-C``): every
        address is routed to ``127.0.0.1::port`` by the smtp transport, nothing is local.
Rule 2: everything (spool, logs, config) lives under the instance's directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

EXIM_ROOT = Path(os.environ.get("RELAY_EXIM_ROOT", "/opt/relay-test-exim"))
EXIM_UID = 65533  # the namespace's Debian-exim user (any uid but root's: Exim refuses 0)

CONFIG = """\
exim_user = Debian-exim
exim_group = Debian-exim
never_users =
keep_environment =
spool_directory = {dir}/spool
log_file_path = {dir}/log/%slog
primary_hostname = exim.test
qualify_domain = exim.test
begin routers
to_relay:
  driver = manualroute
  route_list = * 127.0.0.1::{port}
  self = send
  transport = relay_smtp
begin transports
relay_smtp:
  driver = smtp
  hosts_try_chunking =
  hosts_try_prdr =
begin retry
* * F,1h,1h
"""


def exim_available() -> bool:
    return (EXIM_ROOT / "usr/sbin/exim4").exists() and shutil.which("unshare") is not None


class Exim:
    def __init__(self, directory: Path, port: int) -> None:
        self.dir = directory
        self.port = port
        for sub in ("spool", "log"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
            os.chown(self.dir / sub, EXIM_UID, EXIM_UID)  # Exim writes them as its own user
        (self.dir / "exim.conf").write_text(CONFIG.format(dir=self.dir, port=port))
        passwd = Path("/etc/passwd").read_text()
        group = Path("/etc/group").read_text()
        (self.dir / "passwd").write_text(
            passwd + f"Debian-exim:x:{EXIM_UID}:{EXIM_UID}:Exim:/nonexistent:/usr/sbin/nologin\n"
        )
        (self.dir / "group").write_text(group + f"Debian-exim:x:{EXIM_UID}:\n")

    def submit(self, message: bytes, sender: str, rcpts: Sequence[str]) -> str:
        """Deliver one message now (first attempt); returns Exim's main log afterwards."""
        script = (
            f"mount --bind {self.dir}/passwd /etc/passwd && "
            f"mount --bind {self.dir}/group /etc/group && "
            f"mount --bind {EXIM_ROOT}/usr/sbin /usr/sbin && "
            f'exec /usr/sbin/exim4 -C {self.dir}/exim.conf -odi -f "$0" "$@"'
        )
        subprocess.run(
            ["unshare", "-m", "sh", "-c", script, sender, *rcpts],
            input=message,
            capture_output=True,
            timeout=60,
            check=True,
        )
        return self.log()

    def log(self) -> str:
        try:
            return (self.dir / "log" / "mainlog").read_text()
        except OSError:
            return ""
