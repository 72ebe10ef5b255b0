"""The sdist and the wheel a packager gets: built from a copy of the working tree with `python -m build
--no-isolation` (the installed setuptools, no download), their file lists carry the license, the
service files and what the README and Makefile need, and the build warns of no deprecation."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from support.worktree import copy_worktree

import syftd

_SERVICE_FILES = [
    "systemd/syftd.service",
    "systemd/syftd-user.service",
    "systemd/syftd.sysusers",
    "launchd/org.openmined.syftd.plist",
    "launchd/org.openmined.syftd.agent.plist",
    "config/syftd.toml",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[str], str]:
    """(sdist members without the top folder, wheel members, build output)."""
    if importlib.util.find_spec("build") is None:
        pytest.skip("the 'build' package is missing: pip install 'build>=1.2' (it is in the test extra)")
    try:
        setuptools = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("setuptools is not installed here (a --no-isolation build needs it, >= 77)")
    if int(setuptools.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools} here; the SPDX license field needs setuptools >= 77")
    root = tmp_path_factory.mktemp("packaging")
    source, out = copy_worktree(root / "syftd"), root / "dist"
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    [sdist] = out.glob("*.tar.gz")
    [wheel] = out.glob("*.whl")
    with tarfile.open(sdist) as tar:
        members = [name.split("/", 1)[1] for name in tar.getnames() if "/" in name]
    with zipfile.ZipFile(wheel) as zipped:
        files = zipped.namelist()
    return members, files, output


def test_the_sdist_carries_service_files_license_docs_makefile_and_fixtures(
    built: tuple[list[str], list[str], str],
) -> None:
    """A packager can run `make install-systemd` from the unpacked sdist, and read the docs."""
    sdist, _, _ = built
    for name in [*_SERVICE_FILES, "LICENSE", "Makefile", "README.md", "scripts/sysdeps", "tests/fixtures/SHA256SUMS"]:
        assert name in sdist, f"the sdist lacks {name}"
    for folder in ("docs/", "tests/fixtures/golden-cycle/"):
        assert any(name.startswith(folder) and not name.endswith("/") for name in sdist), f"the sdist lacks {folder}"
    assert not [name for name in sdist if name.endswith(".pyc")]


def test_the_wheel_carries_the_license_and_the_service_files(built: tuple[list[str], list[str], str]) -> None:
    """The license in dist-info, the unit files, plists and config under <prefix>/share/syftd."""
    _, wheel, _ = built
    info = f"syftd-{syftd.__version__}.dist-info"
    data = f"syftd-{syftd.__version__}.data/data/share/syftd"
    assert f"{info}/licenses/LICENSE" in wheel
    for name in _SERVICE_FILES:
        assert f"{data}/{name}" in wheel, f"the wheel lacks {name}"
    assert "syftd/py.typed" in wheel and "syftd/grid/syft.proto" in wheel


def test_the_build_raises_no_deprecation_warning(built: tuple[list[str], list[str], str]) -> None:
    """setuptools accepts the metadata as written (SPDX license, license-files, dynamic version)."""
    _, _, output = built
    assert "deprecat" not in output.lower(), [line for line in output.splitlines() if "eprecat" in line]


def test_the_version_has_one_source(built: tuple[list[str], list[str], str]) -> None:
    """The distributions are named after syftd.__version__, and pyproject.toml states no version of its own."""
    sdist, wheel, _ = built
    assert any(name.startswith(f"syftd-{syftd.__version__}.dist-info/") for name in wheel)
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in pyproject
    assert 'version = { attr = "syftd.__version__" }' in pyproject
    assert not [line for line in pyproject.splitlines() if line.startswith('version = "')]
    assert "PKG-INFO" in sdist
