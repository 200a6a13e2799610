"""CPU seconds of process trees, from /proc: what a server cost the machine during a run.

Rule 1: a tree's figure is every live member's user+system time plus the time of the children
        each member has already reaped (``cutime``/``cstime``): Postfix's smtpd and cleanup
        processes come and go during a run and their time lands in their master's account.
Rule 2: read before and after the same run and subtract; a child that exited but was not yet
        reaped is missed (its time is a few milliseconds at most).
Rule 3: ``machine_busy`` is the whole machine's non-idle CPU time (every process, the kernel's
        interrupt work included), from the first line of /proc/stat: whether a run was bound by
        the cores or by waiting.
Rule 4: ``named`` keeps only the members whose command name (``comm``) contains a word: the
        relay's Redis inside the relay's tree.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[str, list[str]] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    head, _, rest = text.rpartition(")")
    # The command name, then the fields from the state on (the name may hold spaces).
    return head.partition("(")[2], rest.split()


def tree_cpu(roots: list[int], named: str | None = None) -> float:
    """CPU seconds of ``roots`` and all their descendants (Rule 1); with ``named``, of those
    whose command name contains it (Rule 4)."""
    children: dict[int, list[int]] = defaultdict(list)
    stats: dict[int, tuple[str, list[str]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (found := _stat(int(entry))) is not None:
            stats[int(entry)] = found
            children[int(found[1][1])].append(int(entry))  # field 4 of stat: the parent
    total, todo, seen = 0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        comm, fields = stats[pid]
        if named is None or named in comm:
            utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
            total += utime + stime + cutime + cstime
        todo.extend(children.get(pid, ()))
    return total / TICK


def machine_busy() -> float:
    """CPU seconds the machine spent not idle (nor waiting for I/O) since boot (Rule 3)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / TICK  # user to steal; guest time is inside user
