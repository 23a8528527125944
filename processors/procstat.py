"""CPU time and memory of processes, read from /proc: what the benchmarks report per process
(Linux only, like the stack they measure)."""

from __future__ import annotations

import os
from pathlib import Path


def proc_cpu(pid: int) -> float | None:
    """CPU seconds of a process and its children, running or ended (PostgreSQL's backends
    are children of its postmaster)."""
    total = 0.0
    found = False
    for each in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found = True
        used = fields[11:15] if each == pid else fields[11:13]  # with its ended children
        total += sum(int(f) for f in used) / os.sysconf("SC_CLK_TCK")
    return total if found else None


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for t in Path(f"/proc/{pid}/task").iterdir()
                for c in (t / "children").read_text().split()]
    except OSError:
        return []


def proc_rss_mb(pid: int) -> float | None:
    """Peak RSS of a process (VmHWM), MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def open_files(pid: int) -> tuple[int, int] | None:
    """Descriptors a process holds open, and its limit (the soft RLIMIT_NOFILE)."""
    try:
        held = len(os.listdir(f"/proc/{pid}/fd"))
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                limit = line.split()[3]
                return held, int(limit) if limit.isdigit() else 1 << 30
    except OSError:
        return None
    return None
