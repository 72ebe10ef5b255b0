"""Fixtures of the service tests: where the shipped service files are, and a staged install.

``staged_install`` runs the real ``make install-systemd DESTDIR=…`` with the system Python (no torch);
its virtual environment is kept between runs under the user's cache directory, keyed by
pyproject.toml and the Makefile, so a run after a code change only reinstalls the package (~4 s).
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from service.helpers import PREFIX, SYSTEM_PYTHON, cache_root, run_make


@pytest.fixture(scope="session")
def staged_install() -> Iterator[Path]:
    """A DESTDIR holding what ``make install-systemd`` installs (venv, unit, sysusers, config, token)."""
    probe = subprocess.run([str(SYSTEM_PYTHON), "-c", "import venv, ensurepip"], capture_output=True, check=False)
    if not SYSTEM_PYTHON.exists() or probe.returncode != 0:
        pytest.skip(f"{SYSTEM_PYTHON} with the venv and ensurepip modules (python3-venv) is not installed")
    root = cache_root()
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        shutil.rmtree(root / "etc", ignore_errors=True)
        run_make("install-systemd", f"DESTDIR={root}", f"PREFIX={PREFIX}", f"SERVICE_PYTHON={SYSTEM_PYTHON}")
        yield root
