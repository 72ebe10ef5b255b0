"""What `make install-systemd` adds for operators: the udev rule for energy_uj, the man page and the
shell completions (generated at build time), all in the staged DESTDIR, and removed by uninstall."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from service.helpers import PREFIX, SYSTEM_PYTHON, run_make

pytestmark = pytest.mark.slow

INSTALLED = (
    "etc/udev/rules.d/70-syftd-energy.rules",
    "usr/local/share/man/man1/syftd.1",
    "usr/local/share/bash-completion/completions/syftd",
    "usr/local/share/zsh/site-functions/_syftd",
    "usr/local/share/fish/vendor_completions.d/syftd.fish",
)


def test_install_adds_energy_rule_man_page_and_completions(staged_install: Path, tmp_path: Path) -> None:
    """Each file lands 0644; the man page renders; uninstall removes them all."""
    for name in INSTALLED:
        path = staged_install / name
        assert path.is_file(), name
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, name
    assert "syftd" in (staged_install / INSTALLED[0]).read_text()
    if shutil.which("groff"):
        page = subprocess.run(
            ["groff", "-man", "-t", "-Tutf8", "-P-cbou", "-ww", str(staged_install / INSTALLED[1])],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert page.returncode == 0 and page.stderr == "" and "EXIT STATUS" in page.stdout
    destdir = tmp_path / "root"
    shutil.copytree(staged_install, destdir, symlinks=True)
    run_make("uninstall-systemd", f"DESTDIR={destdir}", f"PREFIX={PREFIX}", f"SERVICE_PYTHON={SYSTEM_PYTHON}")
    for name in INSTALLED:
        assert not (destdir / name).exists(), name
