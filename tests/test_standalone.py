"""The repository stands alone: nothing in it names a path outside it, and a copy of the working tree
with nothing beside it collects the whole test suite without an error."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from support.worktree import REPO, copy_worktree, worktree_files

# Spelled in two halves so that this file does not name them itself.
_OUTSIDE = ("../" + "shared", "/work" + "/")


def test_no_project_file_names_a_path_outside_the_repository() -> None:
    """No tracked or untracked file refers to a sibling folder or to the machine it was built on."""
    offenders = []
    for name in worktree_files():
        data = (REPO / name).read_bytes()
        # a word counts only where a path starts with it: a cycle's own "<state_dir>/jobs/<job>/work" is fine
        offenders += [
            f"{name}: {word}" for word in _OUTSIDE if re.search(rb"(^|[\s\"'`(=])" + re.escape(word.encode()), data)
        ]
    assert offenders == []


def test_a_copy_of_the_working_tree_alone_collects_every_test(tmp_path: Path) -> None:
    """`pytest --collect-only -q` in a copy with nothing beside it: no collection error (the fixtures,
    support code and configuration all travel with the repository)."""
    clone = copy_worktree(tmp_path / "alone" / "syftd")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "error" not in output.splitlines()[-1].lower(), output[-4000:]
    assert " tests collected" in output, output[-2000:]


def test_every_document_the_markdown_files_link_to_is_in_the_repository() -> None:
    """Relative links in README.md and docs/*.md lead to files that exist (the docs travel with the code)."""
    broken = []
    for name in [n for n in worktree_files() if n.endswith(".md")]:
        page = REPO / name
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if not (page.parent / target).exists():
                broken.append(f"{name} -> {target}")
    assert broken == []
