"""Who is on the other end of a Unix socket: the peer's uid, per operating system.

Owns the one question the control socket asks of each connection. Linux answers through
``SO_PEERCRED`` (``struct ucred``); macOS and the BSDs through ``LOCAL_PEERCRED`` (``struct xucred``,
what ``getpeereid(3)`` reads). Does not own the decision which uids may talk to the daemon
(``syftd.control``).

The macOS branch is tested with the OS faked (a socket object that answers like Darwin's
``getsockopt``); it has not been run on a Mac.
"""

from __future__ import annotations

import socket
import struct
import sys
from typing import Any, Protocol

__all__ = ["XUCRED", "peer_uid"]


class _Socket(Protocol):
    family: Any

    def getsockopt(self, level: int, option: int, buflen: int) -> bytes: ...


# <sys/un.h> and <sys/ucred.h> of macOS and FreeBSD; Python's socket module does not export them
_SOL_LOCAL = 0
_LOCAL_PEERCRED = 0x001
_XUCRED_VERSION = 0
_NGROUPS = 16
XUCRED = struct.Struct(f"=IIh2x{_NGROUPS}I")
"""``struct xucred``: cr_version, cr_uid, cr_ngroups, cr_groups[16] (76 bytes)."""

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_uid(sock: _Socket, platform: str = sys.platform) -> int | None:
    """The uid of the process at the other end of the Unix socket ``sock``; None if unknown.

    Raises:
        OSError: the kernel refused the query.
    """
    if sock.family != socket.AF_UNIX:
        return None
    if platform.startswith("linux"):
        _pid, uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        return int(uid)
    if platform == "darwin" or platform.startswith(("freebsd", "dragonfly")):
        raw = sock.getsockopt(_SOL_LOCAL, _LOCAL_PEERCRED, XUCRED.size)
        if len(raw) < XUCRED.size:
            return None
        version, uid, *_groups = XUCRED.unpack(raw[: XUCRED.size])
        return int(uid) if version == _XUCRED_VERSION else None
    return None
