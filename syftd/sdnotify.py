"""The service manager's notification protocol (sd_notify), written out: one datagram per message.

Owns reading ``$NOTIFY_SOCKET`` / ``$WATCHDOG_USEC`` once, removing them from the environment so that
children never inherit them, and sending ``KEY=VALUE`` lines. Does not own when to send what: the
daemon decides. Without ``$NOTIFY_SOCKET`` (a terminal, launchd) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time

__all__ = ["Notifier"]


class Notifier:
    """Sends sd_notify messages to the socket named by ``$NOTIFY_SOCKET`` when it was set."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.pop("NOTIFY_SOCKET", "")
        watchdog_usec = env.pop("WATCHDOG_USEC", "")
        watchdog_pid = env.pop("WATCHDOG_PID", "")
        self._address: str | None = None
        if address.startswith("@"):
            self._address = "\0" + address[1:]
        elif address.startswith("/"):
            self._address = address
        self._socket: socket.socket | None = None
        if self._address is not None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)
        self.watchdog_interval_s: float | None = None
        if watchdog_usec.isdigit() and int(watchdog_usec) > 0:
            if not watchdog_pid or watchdog_pid == str(os.getpid()):
                self.watchdog_interval_s = int(watchdog_usec) / 1e6 / 2

    @property
    def is_enabled(self) -> bool:
        """True when a service manager listens."""
        return self._socket is not None

    def notify(self, **fields: str | int) -> bool:
        """Send one message, e.g. ``notify(READY=1, STATUS="idle")``; False if it could not be sent."""
        if self._socket is None or self._address is None:
            return False
        text = "\n".join(f"{key}={_one_line(value)}" for key, value in fields.items())
        try:
            self._socket.sendto(text.encode(), self._address)
        except OSError:
            # the manager went away or its queue is full; the protocol has no way to retry
            return False
        return True

    def ready(self, status: str) -> None:
        """``READY=1`` with a status line."""
        self.notify(READY=1, STATUS=status)

    def reloading(self, status: str = "reloading configuration") -> None:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` (both needed by Type=notify-reload)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify(RELOADING=1, MONOTONIC_USEC=usec, STATUS=status)

    def stopping(self, status: str = "stopping") -> None:
        """``STOPPING=1`` with a status line."""
        self.notify(STOPPING=1, STATUS=status)

    def status(self, text: str) -> None:
        """``STATUS=`` only: the line ``systemctl status`` shows."""
        self.notify(STATUS=text)

    def watchdog(self) -> None:
        """``WATCHDOG=1``: call from the event loop, never from a thread."""
        self.notify(WATCHDOG=1)

    def extend_timeout(self, seconds: float) -> None:
        """``EXTEND_TIMEOUT_USEC=``: ask for more time while stopping."""
        self.notify(EXTEND_TIMEOUT_USEC=int(seconds * 1e6))

    def close(self) -> None:
        """Close the socket; later calls are no-ops."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _one_line(value: str | int) -> str:
    return str(value).replace("\n", " ")
