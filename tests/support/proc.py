"""Reading a process's resident memory and its wake-ups from /proc (for the benchmarks)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["context_switches", "rss_mib"]


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"/proc/{pid}/status has no VmRSS")


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of ``pid``: each wake-up costs at least one."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                total += int(line.split()[1])
    return total
