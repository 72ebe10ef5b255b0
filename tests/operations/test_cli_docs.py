"""The man page and shell completions generated from the argparse parser (tools/cli_docs.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from syftd import control
from syftd.errors import ExitStatus

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli-docs")
    done = subprocess.run(
        [sys.executable, str(PROJECT / "tools" / "cli_docs.py"), str(out)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return out


def test_generator_writes_man_page_and_three_completions(docs: Path) -> None:
    """One run writes syftd.1, syftd.bash, _syftd and syftd.fish, each naming every verb."""
    for name in ("syftd.1", "syftd.bash", "_syftd", "syftd.fish"):
        text = (docs / name).read_text()
        for verb in ("run", "check-config", *control.VERBS):
            assert verb.replace("-", "\\-") in text or verb in text, (name, verb)


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_man_page_renders_without_warnings_and_lists_every_exit_status(docs: Path) -> None:
    """groff -ww finds nothing to warn about; EXIT STATUS has a row per ExitStatus."""
    done = subprocess.run(
        ["groff", "-man", "-t", "-Tutf8", "-P-cbou", "-ww", str(docs / "syftd.1")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    page = done.stdout
    assert "EXIT STATUS" in page
    for status in ExitStatus:
        assert f"{int(status)}" in page.split("EXIT STATUS", 1)[1]


def complete(docs: Path, *words: str) -> list[str]:
    """What bash offers after ``words`` (the last one being typed), with the generated completion loaded."""
    script = (
        f"source {docs / 'syftd.bash'}; COMP_WORDS=({' '.join(repr(w) for w in words)}); "
        f"COMP_CWORD={len(words) - 1}; _syftd; printf '%s\\n' \"${{COMPREPLY[@]}}\""
    )
    done = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return [w for w in done.stdout.splitlines() if w]


def test_bash_completes_verbs_their_options_and_choices(docs: Path) -> None:
    """Verbs complete after `syftd` (also after --config PATH), then that verb's options and choices."""
    assert complete(docs, "syftd", "s") == ["status", "simulate"]
    assert "history" in complete(docs, "syftd", "--config", "/etc/x.toml", "h")
    assert complete(docs, "syftd", "simulate", "") >= ["--help", "--json"]
    assert set(complete(docs, "syftd", "simulate", "p")) == {"power-loss"}
    assert complete(docs, "syftd", "history", "--j") == ["--json"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed here; its completion is not checked")
def test_zsh_completion_parses(docs: Path) -> None:
    """zsh -n accepts the generated _syftd."""
    done = subprocess.run(["zsh", "-n", str(docs / "_syftd")], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed here; its completion is not checked")
def test_fish_completes_verbs_options_and_choices(docs: Path) -> None:
    """fish's own completion engine (complete -C) offers the verbs, a verb's options and its choices."""

    def offered(line: str) -> list[str]:
        script = f"source {docs / 'syftd.fish'}; complete -C {line!r}"
        done = subprocess.run(["fish", "--no-config", "-c", script], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return [row.split("\t")[0] for row in done.stdout.splitlines() if row]

    assert offered("syftd si") == ["simulate"]
    assert offered("syftd simulate p") == ["power-loss"]
    assert {"--json", "--limit", "--runtime-dir"} <= set(offered("syftd history --"))


def test_udev_rule_gives_the_syftd_group_read_access_to_package_energy() -> None:
    """The shipped rule matches powercap intel-rapl zones on add and makes energy_uj group syftd, g+r."""
    rules = [
        line
        for line in (PROJECT / "systemd" / "70-syftd-energy.rules").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(rules) == 1
    keys = [part.strip() for part in rules[0].split(", ")]
    assert {'ACTION=="add"', 'SUBSYSTEM=="powercap"', 'KERNEL=="intel-rapl:*"'} <= set(keys)
    assert 'RUN+="/bin/chgrp syftd /sys%p/energy_uj"' in keys and 'RUN+="/bin/chmod g+r /sys%p/energy_uj"' in keys
    group = (PROJECT / "systemd" / "syftd.service").read_text()
    assert "\nGroup=syftd\n" in group
