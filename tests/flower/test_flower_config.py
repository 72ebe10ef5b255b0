"""`kind = "flower"` jobs in the [[job]] tables: what check-config accepts and what it names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from syftd import configfile
from syftd.errors import ConfigError
from syftd.flower.config import spec_of


def venv(tmp_path: Path) -> Path:
    """A directory shaped like a Flower venv: an executable bin/flower-supernode."""
    exe = tmp_path / "venv" / "bin" / "flower-supernode"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    return tmp_path / "venv"


def flower_job(tmp_path: Path, extra: str = "", superlink: str = "127.0.0.1:9092") -> str:
    return (
        f'[[job]]\nname = "fl"\nkind = "flower"\n[job.flower]\nsuperlink = "{superlink}"\n'
        f'venv = "{venv(tmp_path)}"\n{extra}'
    )


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        configfile.loads(text)
    return list(info.value.problems)


def test_a_flower_job_needs_no_grid_table_and_yields_the_supervisor_spec(tmp_path: Path) -> None:
    """Beside the default pygrid jobs: same constraints/budget tables, [job.flower] instead of [job.grid]."""
    text = flower_job(tmp_path, 'insecure = true\nnode_config = ["partition-id=2"]\n[job.budget]\nexpiry_grace_s = 3\n')
    text += '[[job]]\nname = "mnist"\n[job.grid]\nurl = "http://127.0.0.1:5000"\nmodel = "m"\nversion = "1"\n'
    loaded = configfile.loads(text)
    fl, mnist = loaded.job
    assert fl.kind == "flower" and mnist.kind == "pygrid" and mnist.flower is None
    assert fl.flower is not None and fl.budget.expiry_grace_s == 3
    spec = spec_of(fl.flower, job_dir=tmp_path / "state", stop_file=tmp_path / "stop")
    assert spec.executable == tmp_path / "venv" / "bin" / "flower-supernode"
    assert spec.insecure and spec.node_config == ("partition-id=2",) and spec.runtime_port == 9094


@pytest.mark.parametrize(
    ("extra", "superlink", "expected"),
    [
        (
            "insecure = true\n",
            "superlink.example.org:9092",
            "job[0].flower.superlink: insecure (plain HTTP) is allowed only to a loopback SuperLink",
        ),
        ("", "https://x:1", 'job[0].flower.superlink: must be "host:port"'),
        (
            'insecure = true\nroot_certificates = "/etc/hosts"\n',
            "127.0.0.1:1",
            "job[0].flower.root_certificates: not used with insecure",
        ),
        (
            'insecure = true\nauth_private_key = "/etc/hosts"\n',
            "127.0.0.1:1",
            "job[0].flower.auth_private_key: SuperNode authentication needs TLS",
        ),
        ('trusted_entities = "/nonexistent.yaml"\n', "127.0.0.1:1", "job[0].flower.trusted_entities: no such file"),
        ('supernode = "/bin/true"\n', "127.0.0.1:1", "job[0].flower.venv: set exactly one of venv or supernode"),
        ("runtime_port = 0\n", "127.0.0.1:1", "job[0].flower.runtime_port: must be from 1 to 65535"),
        (
            "node_config = [\"syftd-stop-file='/x'\"]\n",
            "127.0.0.1:1",
            "job[0].flower.node_config[0]: syftd-stop-file is set by syftd",
        ),
        (
            '[job.grid]\nurl = "http://127.0.0.1:1"\nmodel = "m"\nversion = "1"\n',
            "127.0.0.1:1",
            'job[0].grid: not used by kind = "flower"',
        ),
    ],
)
def test_flower_keys_are_checked_and_named(tmp_path: Path, extra: str, superlink: str, expected: str) -> None:
    found = problems_of(flower_job(tmp_path, extra, superlink))
    assert any(p.startswith(expected) for p in found), found


def test_kind_flower_without_its_table_and_pygrid_without_grid_are_named() -> None:
    assert problems_of('[[job]]\nname = "a"\nkind = "flower"\n') == ['job[0].flower: required when kind = "flower"']
    assert problems_of('[[job]]\nname = "a"\n') == ["job[0].grid: required key is missing"]
    assert problems_of('[[job]]\nname = "a"\nkind = "flwr"\n')[0].startswith("job[0].kind: must be one of")


def test_a_missing_executable_is_named_with_its_path(tmp_path: Path) -> None:
    text = '[[job]]\nname = "fl"\nkind = "flower"\n[job.flower]\nsuperlink = "h:1"\nvenv = "/nonexistent/venv"\n'
    (problem,) = problems_of(text)
    assert problem.startswith("job[0].flower.venv: no executable flower-supernode at /nonexistent/venv/bin/")


def test_check_config_validates_a_flower_job(tmp_path: Path) -> None:
    """`syftd check-config`: exit 0 for a good flower job, 78 naming the key for a bad one."""
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(flower_job(tmp_path / "a"))
    bad.write_text(flower_job(tmp_path / "b", "insecure = true\n", "superlink.example.org:9092"))
    for path, status, needle in ((good, 0, "OK (1 job)"), (bad, 78, "job[0].flower.superlink")):
        done = subprocess.run(
            [sys.executable, "-m", "syftd", "check-config", str(path)], capture_output=True, text=True, check=False
        )
        assert done.returncode == status and needle in done.stdout + done.stderr, done


def test_every_flower_key_is_documented_in_the_shipped_example() -> None:
    """config/syftd.toml shows a commented flower job with each [job.flower] key."""
    import dataclasses

    from syftd.flower.config import FlowerConfig

    text = (Path(__file__).parents[2] / "config" / "syftd.toml").read_text()
    for f in dataclasses.fields(FlowerConfig):
        assert f"{f.name} =" in text, f"FlowerConfig.{f.name} is not in config/syftd.toml"
    assert 'kind = "pygrid"' in text and 'kind = "flower"' in text
