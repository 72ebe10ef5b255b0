"""A hold point inside the real trainer process, and the test's side of it (tests/support/phases.py).

``phases`` copies this file into the daemon's hooks directory (on the trainer's PYTHONPATH), where its
``sitecustomize`` and gated data source call ``hold(gate)``; the test imports it for the addresses and
``let_go``. While ``<gate>.hold`` exists the trainer writes its pid to ``<gate>.entered``, tells the test
(a datagram to ``address(gate, "test")``, if it listens) and blocks on its own datagram socket until
the test lets it go: no poll on either side. A signal ends the blocked process as it would end it
anywhere else.

Standard library only: it runs in the trainer, before its imports.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket

__all__ = ["address", "hold", "let_go"]


def address(gate: str, who: object) -> str:
    """The abstract unix address of ``who`` (a pid, or ``"test"``) at ``gate`` (a path without suffix)."""
    return f"\0syftd-gate-{hashlib.sha256(gate.encode()).hexdigest()[:16]}-{who}"


def hold(gate: str) -> None:
    """In the trainer: block here while ``<gate>.hold`` exists (returns at once otherwise)."""
    if not os.path.exists(gate + ".hold"):
        return
    pid = os.getpid()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address(gate, pid))  # bound before it says so: a go sent from then on waits in the queue
        with open(gate + ".entered", "w") as entered:
            entered.write(str(pid))
        with contextlib.suppress(OSError):  # nobody listens: the test looks at the .entered file instead
            sock.sendto(str(pid).encode(), address(gate, "test"))
        if os.path.exists(gate + ".hold"):  # let_go removes the .hold file before it reads .entered
            sock.recv(16)


def let_go(gate: str) -> None:
    """In the test: remove ``<gate>.hold``, then let the trainer that entered it (if any) go on."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(gate + ".hold")
    try:
        with open(gate + ".entered") as entered:
            pid = entered.read().strip()
    except FileNotFoundError:
        return
    if pid:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
            sock.sendto(b"go", address(gate, pid))  # OSError: that trainer has gone
