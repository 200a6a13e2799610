"""CPU seconds of process trees, from /proc: what a server cost the machine during a run.

Rule 1: a tree's figure is every live member's user+system time plus the time of the children
        each member has already reaped (``cutime``/``cstime``): Postfix's smtpd and cleanup
        processes come and go during a run and their time lands in their master's account.
Rule 2: read before and after the same run and subtract; a child that exited but was not yet
        reaped is missed (its time is a few milliseconds at most).
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # fields from the state on (the name may hold spaces)


def tree_cpu(roots: list[int]) -> float:
    """CPU seconds of ``roots`` and all their descendants (Rule 1)."""
    children: dict[int, list[int]] = defaultdict(list)
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            stats[int(entry)] = fields
            children[int(fields[1])].append(int(entry))  # field 4 of stat: the parent
    total, todo, seen = 0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        utime, stime, cutime, cstime = (int(v) for v in stats[pid][11:15])
        total += utime + stime + cutime + cstime
        todo.extend(children.get(pid, ()))
    return total / TICK
