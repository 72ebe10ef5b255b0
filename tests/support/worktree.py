"""The repository's working tree as a user's clone would have it: git's tracked files plus untracked,
not-ignored ones, copied into an empty directory (for the stand-alone and packaging tests)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = ["REPO", "copy_worktree", "worktree_files"]

REPO = Path(__file__).resolve().parents[2]


def worktree_files() -> list[str]:
    """Paths (relative, posix) of the tracked and untracked-but-not-ignored files that exist.

    Skips the calling test where this is not a git checkout (an unpacked sdist, say): the list of
    what belongs to the project comes from git.
    """
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip(f"{REPO} is not a git checkout (or git is missing): the working tree's file list comes from git")
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    return sorted({name for name in listing.split("\0") if name and (REPO / name).is_file()})


def copy_worktree(destination: Path) -> Path:
    """Copy the working tree's files into ``destination`` (created; must not exist) and return it."""
    destination.mkdir(parents=True)
    for name in worktree_files():
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    return destination
