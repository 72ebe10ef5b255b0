"""Energy per cycle: the CPU package energy from the powercap RAPL counters, and the trainer's share.

Owns reading ``/sys/class/powercap/intel-rapl:N/energy_uj`` (one top-level zone per CPU package; the
same driver serves AMD), the wrap-around of each counter at ``max_energy_range_uj``, the machine's busy
CPU time from ``/proc/stat``, and the arithmetic: package joules over a cycle, and the trainer's share
estimated from its CPU time over the machine's. Does not own when a cycle starts or ends (the cycle
calls ``read()`` at both ends) or where the joules go (``cycle.finished``, the history, the metrics).

It is whole-package energy: every process on the machine. Where the counters cannot be read (no
RAPL, a VM, or ``energy_uj`` readable by root only, as on current kernels: the shipped udev rule gives
the service's group read access) the answer is ``"unavailable"`` with the reason. One wrap per reading
pair is handled; at 100 W a counter wraps every ~40 min, so a longer cycle could miss a wrap.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "UNAVAILABLE",
    "EnergyMeter",
    "Reading",
    "Zone",
    "counter_delta",
    "cycle_energy",
    "process_cpu_s",
    "trainer_share",
]

UNAVAILABLE = "unavailable"
POWERCAP = Path("/sys/class/powercap")
PROC_STAT = Path("/proc/stat")
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal (not idle, iowait, guest: in user)


@dataclass(frozen=True, slots=True)
class Zone:
    """One package zone: its directory, its name, and the value at which its counter wraps."""

    path: Path
    name: str
    max_range_uj: int


@dataclass(frozen=True, slots=True)
class Reading:
    """The counters at one moment: µJ per zone, and the machine's busy CPU seconds."""

    energy_uj: Mapping[str, int] = field(default_factory=dict)
    busy_cpu_s: float = 0.0


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (None once it is gone)."""
    import psutil  # the daemon's dependency; imported here so the pure functions need nothing

    try:
        times = psutil.Process(pid).cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return float(times.user + times.system)


def counter_delta(before: int, after: int, max_range_uj: int) -> int:
    """µJ between two readings of one counter that wraps to 0 past ``max_range_uj``."""
    if after >= before:
        return after - before
    return max_range_uj - before + after


def trainer_share(package_j: float, trainer_cpu_s: float, machine_busy_s: float) -> float:
    """The trainer's part of ``package_j``: its CPU time over the whole machine's, capped at all of it."""
    if package_j <= 0 or trainer_cpu_s <= 0 or machine_busy_s <= 0:
        return 0.0
    return package_j * min(1.0, trainer_cpu_s / machine_busy_s)


def cycle_energy(
    zones: Mapping[str, Zone], before: Reading | None, after: Reading | None, trainer_cpu_s: float | None
) -> dict[str, Any]:
    """The fields a cycle's record gains: ``energy_j`` and ``trainer_energy_j`` (or ``"unavailable"``)."""
    if before is None or after is None or not zones or before.energy_uj.keys() != after.energy_uj.keys():
        return {"energy_j": UNAVAILABLE}
    micro = sum(counter_delta(before.energy_uj[key], after.energy_uj[key], zones[key].max_range_uj) for key in zones)
    package_j = micro / 1e6
    out: dict[str, Any] = {"energy_j": round(package_j, 3)}
    if trainer_cpu_s is not None:
        busy = after.busy_cpu_s - before.busy_cpu_s
        out["trainer_energy_j"] = round(trainer_share(package_j, trainer_cpu_s, busy), 3)
    return out


class EnergyMeter:
    """Reads the package zones under ``root`` (``/sys/class/powercap``) and the machine's CPU time."""

    def __init__(self, root: Path = POWERCAP, proc_stat: Path = PROC_STAT) -> None:
        self._root = root
        self._proc_stat = proc_stat
        self.zones: dict[str, Zone] = {}
        self.problem: str | None = None
        self._probe()

    @property
    def available(self) -> bool:
        """True when every package counter was readable at construction."""
        return self.problem is None

    @property
    def status(self) -> str:
        """``"readable (N package zones)"`` or ``"unavailable: why"``."""
        return f"readable ({len(self.zones)} package zones)" if self.problem is None else self.problem

    def _probe(self) -> None:
        try:
            candidates = sorted(p for p in self._root.iterdir() if p.name.count(":") == 1)
        except OSError as exc:
            self.problem = f"{UNAVAILABLE}: no powercap RAPL here ({self._root}: {exc.strerror or exc})"
            return
        for path in candidates:
            try:
                name = (path / "name").read_text().strip()
                if not name.startswith("package"):
                    continue
                max_range = int((path / "max_energy_range_uj").read_text())
                int((path / "energy_uj").read_text())
            except PermissionError:
                self.problem = (
                    f"{UNAVAILABLE}: {path / 'energy_uj'} is not readable by uid {os.getuid()} "
                    "(install the udev rule 70-syftd-energy.rules, or run as root)"
                )
                self.zones.clear()
                return
            except (OSError, ValueError):
                continue
            self.zones[path.name] = Zone(path, name, max_range)
        if not self.zones:
            self.problem = f"{UNAVAILABLE}: no RAPL package zone under {self._root}"

    def read(self) -> Reading | None:
        """The counters now, or None when one cannot be read. Blocking sysfs reads (microseconds)."""
        if not self.zones:
            return None
        try:
            energy = {key: int((zone.path / "energy_uj").read_text()) for key, zone in self.zones.items()}
        except (OSError, ValueError):
            return None
        return Reading(energy, self._busy_cpu_s())

    def _busy_cpu_s(self) -> float:
        try:
            with self._proc_stat.open() as f:
                fields = f.readline().split()[1:]
            ticks = sum(int(fields[i]) for i in _BUSY_FIELDS if i < len(fields))
        except (OSError, ValueError, IndexError):
            return 0.0
        return ticks / os.sysconf("SC_CLK_TCK")

    def measure(self, before: Reading | None, after: Reading | None, trainer_cpu_s: float | None) -> dict[str, Any]:
        """``cycle_energy`` over this meter's zones."""
        return cycle_energy(self.zones, before, after, trainer_cpu_s)
