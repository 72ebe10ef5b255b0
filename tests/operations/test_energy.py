"""Energy per cycle over a fake powercap tree (wrap-around included), and for real where this machine allows."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from syftd.energy import UNAVAILABLE, EnergyMeter, Reading, counter_delta, cycle_energy, trainer_share

PROJECT = Path(__file__).resolve().parents[2]
MAX_RANGE = 262_143_328_850  # a real package zone's max_energy_range_uj


def fake_powercap(root: Path, energies: dict[str, int], *, extra_zones: bool = True) -> Path:
    """intel-rapl:N package zones, plus a core sub-zone and a psys zone that must be ignored."""
    for i, (name, value) in enumerate(energies.items()):
        zone = root / f"intel-rapl:{i}"
        zone.mkdir(parents=True)
        (zone / "name").write_text(f"{name}\n")
        (zone / "energy_uj").write_text(f"{value}\n")
        (zone / "max_energy_range_uj").write_text(f"{MAX_RANGE}\n")
        if extra_zones:
            sub = root / f"intel-rapl:{i}:0"
            sub.mkdir()
            (sub / "name").write_text("core\n")
            (sub / "energy_uj").write_text("5\n")
            (sub / "max_energy_range_uj").write_text(f"{MAX_RANGE}\n")
    if extra_zones:
        psys = root / "intel-rapl:9"
        psys.mkdir()
        (psys / "name").write_text("psys\n")
        (psys / "energy_uj").write_text("1\n")
        (psys / "max_energy_range_uj").write_text(f"{MAX_RANGE}\n")
    return root


def set_energy(root: Path, index: int, value: int) -> None:
    (root / f"intel-rapl:{index}" / "energy_uj").write_text(f"{value}\n")


def fake_stat(path: Path, busy_ticks: int) -> Path:
    per = busy_ticks // 3
    path.write_text(f"cpu  {per} 0 {per} 999999 5 0 {busy_ticks - 2 * per} 0 0 0\ncpu0 1 2 3 4\n")
    return path


def test_counter_delta_handles_one_wrap() -> None:
    """A counter that passed max_energy_range_uj and restarted at 0 still gives the energy between."""
    assert counter_delta(100, 350, MAX_RANGE) == 250
    assert counter_delta(MAX_RANGE - 1_000_000, 2_000_000, MAX_RANGE) == 3_000_000
    assert counter_delta(5, 5, MAX_RANGE) == 0


def test_trainer_share_is_its_cpu_time_over_the_machines() -> None:
    """The trainer's joules are the package's times its CPU-time fraction, capped at all of them."""
    assert trainer_share(100.0, 3.0, 4.0) == pytest.approx(75.0)
    assert trainer_share(100.0, 5.0, 4.0) == pytest.approx(100.0)
    assert trainer_share(100.0, 1.0, 0.0) == 0.0


def test_meter_over_a_fake_tree_sums_packages_across_a_wrap(tmp_path: Path) -> None:
    """Two package zones (one wrapping during the cycle), sub-zones and psys ignored, trainer share from /proc/stat."""
    root = fake_powercap(tmp_path / "powercap", {"package-0": MAX_RANGE - 500_000, "package-1": 1_000_000})
    stat = fake_stat(tmp_path / "stat", busy_ticks=100)
    meter = EnergyMeter(root, stat)
    assert meter.available and sorted(meter.zones) == ["intel-rapl:0", "intel-rapl:1"]
    assert meter.status == "readable (2 package zones)"
    before = meter.read()
    set_energy(root, 0, 1_500_000)  # wrapped: 0.5 J to the top, then 1.5 J
    set_energy(root, 1, 4_000_000)  # 3 J
    ticks = os.sysconf("SC_CLK_TCK")
    fake_stat(stat, busy_ticks=100 + 4 * ticks)  # the machine was busy 4 CPU-seconds
    after = meter.read()
    assert after is not None and before is not None
    assert meter.measure(before, after, trainer_cpu_s=1.0) == {"energy_j": 5.0, "trainer_energy_j": 1.25}
    assert meter.measure(before, after, trainer_cpu_s=None) == {"energy_j": 5.0}


def test_no_powercap_or_no_package_zone_is_unavailable_with_the_reason(tmp_path: Path) -> None:
    """A machine without RAPL says "unavailable" and why; a cycle's energy is then "unavailable"."""
    missing = EnergyMeter(tmp_path / "nowhere", tmp_path / "stat")
    assert not missing.available and missing.status.startswith(f"{UNAVAILABLE}: no powercap RAPL here")
    assert missing.read() is None
    assert missing.measure(None, None, 1.0) == {"energy_j": UNAVAILABLE}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no RAPL package zone" in EnergyMeter(empty).status
    assert cycle_energy({}, Reading(), Reading(), None) == {"energy_j": UNAVAILABLE}


def test_unreadable_energy_uj_names_the_file_and_the_udev_rule(tmp_path: Path) -> None:
    """energy_uj readable by root only (current kernels): the reason names the file and the fix.

    As root the child drops CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (setpriv) and the file belongs to
    another uid, so the kernel refuses the read as it refuses the service's user."""
    root = fake_powercap(tmp_path / "powercap", {"package-0": 10}, extra_zones=False)
    energy = root / "intel-rapl:0" / "energy_uj"
    energy.chmod(0o400)
    prefix: list[str] = []
    if os.getuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root without setpriv cannot be refused a read")
        os.chown(energy, 65534, 65534)
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    code = "import sys, pathlib, syftd.energy as e; print(e.EnergyMeter(pathlib.Path(sys.argv[1])).status)"
    done = subprocess.run(
        [*prefix, sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=60, cwd=PROJECT
    )
    assert done.returncode == 0, done.stderr
    assert f"{energy} is not readable by uid {os.getuid()}" in done.stdout
    assert "70-syftd-energy.rules" in done.stdout


def test_this_machine_for_real() -> None:
    """Reads /sys/class/powercap as the test runs (root here); prints whether RAPL is readable."""
    meter = EnergyMeter()
    print(f"\nRAPL on this machine (uid {os.getuid()}): {meter.status}")
    if not meter.available:
        assert meter.status.startswith(UNAVAILABLE)
        assert meter.measure(meter.read(), meter.read(), 0.1) == {"energy_j": UNAVAILABLE}
        return
    before = meter.read()
    sum(i * i for i in range(2_000_000))
    result = meter.measure(before, meter.read(), trainer_cpu_s=0.1)
    assert isinstance(result["energy_j"], float) and result["energy_j"] >= 0


def test_process_cpu_time_of_a_live_and_a_gone_process() -> None:
    """The trainer's CPU seconds come from the kernel's accounting; a reaped process has none."""
    from syftd.energy import process_cpu_s

    sum(i for i in range(300_000))
    assert (process_cpu_s(os.getpid()) or 0.0) > 0
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process_cpu_s(child.pid) is None
