"""The control socket's peer check: SO_PEERCRED for real on Linux; macOS's LOCAL_PEERCRED with the OS faked.

The macOS test cannot run a Mac here: a socket object answers getsockopt as Darwin's kernel would
(struct xucred); the code under test is the same function the server calls. Not run on a Mac."""

from __future__ import annotations

import os
import socket

import pytest

from syftd.peercred import XUCRED, peer_uid


def test_linux_reads_the_peer_uid_with_so_peercred() -> None:
    """A real socketpair: the peer is this very process, so its uid."""
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        assert peer_uid(left, platform="linux") == os.getuid()


class FakeDarwinSocket:
    """Stands in for a macOS AF_UNIX socket: answers getsockopt(SOL_LOCAL=0, LOCAL_PEERCRED=1, …) only."""

    family = socket.AF_UNIX

    def __init__(self, uid: int, version: int = 0) -> None:
        self.asked: list[tuple[int, int, int]] = []
        self._answer = XUCRED.pack(version, uid, 2, *([20, 12] + [0] * 14))

    def getsockopt(self, level: int, option: int, buflen: int) -> bytes:
        self.asked.append((level, option, buflen))
        if (level, option) != (0, 1):
            raise OSError(92, "Protocol not available")  # ENOPROTOOPT, as for SO_PEERCRED on a Mac
        return self._answer[:buflen]


def test_macos_asks_local_peercred_and_reads_the_xucred_uid() -> None:
    """On darwin the uid comes from struct xucred (76 bytes) at SOL_LOCAL/LOCAL_PEERCRED, never SO_PEERCRED."""
    sock = FakeDarwinSocket(uid=501)
    assert peer_uid(sock, platform="darwin") == 501
    assert sock.asked == [(0, 1, 76)]
    assert XUCRED.size == 76


def test_macos_unknown_xucred_version_is_no_uid() -> None:
    """An xucred of another version is not trusted: no uid, so the server refuses the peer."""
    assert peer_uid(FakeDarwinSocket(uid=0, version=7), platform="darwin") is None


def test_an_os_without_a_known_call_gives_no_uid() -> None:
    """Elsewhere (or for a TCP socket) there is no uid, and the control server refuses."""
    assert peer_uid(FakeDarwinSocket(uid=0), platform="sunos5") is None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        assert peer_uid(tcp, platform="linux") is None


@pytest.mark.parametrize("platform", ["freebsd14", "darwin"])
def test_bsd_family_shares_the_macos_call(platform: str) -> None:
    """FreeBSD has the same LOCAL_PEERCRED and struct xucred."""
    assert peer_uid(FakeDarwinSocket(uid=1001), platform=platform) == 1001
