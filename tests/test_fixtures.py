"""The recorded PyGrid fixtures under tests/fixtures are the bytes their README describes: every file is
listed in SHA256SUMS with its digest, and nothing unlisted lies beside them."""

from __future__ import annotations

import hashlib

from conftest import FIXTURES

_SUMS = FIXTURES / "SHA256SUMS"
_NOT_DATA = {"SHA256SUMS", "README.md"}


def _listed() -> dict[str, str]:
    sums: dict[str, str] = {}
    for number, line in enumerate(_SUMS.read_text(encoding="utf-8").splitlines(), 1):
        digest, sep, name = line.partition("  ")
        assert sep and len(digest) == 64, f"{_SUMS}:{number}: not '<sha256>  <path>': {line!r}"
        sums[name] = digest
    return sums


def _present() -> set[str]:
    return {p.relative_to(FIXTURES).as_posix() for p in FIXTURES.rglob("*") if p.is_file() and p.name not in _NOT_DATA}


def test_every_fixture_has_the_digest_listed_in_sha256sums() -> None:
    """Each listed file exists and hashes to its listed sha256 (a changed recording fails here, by name)."""
    wrong = []
    for name, digest in _listed().items():
        path = FIXTURES / name
        assert path.is_file(), f"{path} is listed in SHA256SUMS but missing"
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            wrong.append(name)
    assert wrong == [], f"these fixtures differ from SHA256SUMS: {wrong}"


def test_no_fixture_lies_outside_sha256sums() -> None:
    """Every file under tests/fixtures (but the README and the list itself) is listed."""
    assert _present() - set(_listed()) == set()


def test_the_fixtures_readme_names_every_top_level_entry() -> None:
    """The README says where each file or folder came from."""
    readme = (FIXTURES / "README.md").read_text(encoding="utf-8")
    for entry in sorted(p.name for p in FIXTURES.iterdir() if p.name not in _NOT_DATA):
        assert f"`{entry}" in readme, f"tests/fixtures/README.md does not describe {entry}"
