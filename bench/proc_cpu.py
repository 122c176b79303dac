"""CPU time of processes from Linux /proc: what a benchmark run cost the machine, which shared,
noisy machines distort far less than they distort a rate."""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int | str) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of a process, or None if it is gone (or no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # the name may hold spaces
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of one process so far."""
    found = _stat(pid)
    return None if found is None else found[1]


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU of a process and all its descendants so far."""
    stats = {int(e.name): s for e in Path("/proc").iterdir() if e.name.isdigit() and (s := _stat(e.name))}
    tree, grew = {root}, True
    while grew:  # children of the tree, until none is new
        grew = False
        for pid, (ppid, _) in stats.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sum(stats[pid][1] for pid in tree if pid in stats)


def thread_cpu_seconds() -> dict[str, float]:
    """User + system CPU so far of each live thread of this process, by thread name (threads that
    share a name are added up): which stage of a pipeline of threads the CPU went to."""
    import threading

    out: dict[str, float] = {}
    for thread in threading.enumerate():
        if thread.native_id is None:
            continue
        found = _stat(f"self/task/{thread.native_id}")
        if found is not None:
            out[thread.name] = out.get(thread.name, 0.0) + found[1]
    return out
