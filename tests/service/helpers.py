"""Paths and helpers shared by the service tests (imported as ``service.helpers``)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = [
    "LAUNCHD_DIR",
    "PREFIX",
    "REPO",
    "SYSTEMD_DIR",
    "SYSTEM_PYTHON",
    "cache_root",
    "copy_venv",
    "parse_unit",
    "run_make",
]

REPO = Path(__file__).resolve().parents[2]
SYSTEMD_DIR = REPO / "systemd"
LAUNCHD_DIR = REPO / "launchd"
SYSTEM_PYTHON = Path("/usr/bin/python3")
PREFIX = "/opt/syftd"


def run_make(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run make in the repository; fails the test with make's output when it fails."""
    done = subprocess.run(
        ["make", "--no-print-directory", "-s", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"make {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def cache_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "Makefile"):
        digest.update((REPO / name).read_bytes())
    digest.update(os.fsencode(SYSTEM_PYTHON.resolve()))
    return base / "syftd-tests" / f"install-{digest.hexdigest()[:12]}"


def copy_venv(staged: Path, destdir: Path) -> None:
    """Give ``destdir`` a copy of the staged venv so an install there only refreshes the package."""
    target = destdir / PREFIX.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(staged / PREFIX.lstrip("/"), target, symlinks=True)


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as section -> key -> every value in order (systemd allows repeated keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections
