"""The PyGrid auth token: read from a file only its owner can read.

Owns the file checks (present, a regular file and not a symlink, no group/other read bit, not
empty; a FIFO or device is refused without being read) and ``read_job_token``, the daemon's reading
of a job's token file (logged, a refusal returned as its reason). Does not own
where the path comes from (``grid.token_file``; under systemd a ``LoadCredential=`` path) or the
redaction of the token in logs (syftd.log).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from syftd import events
from syftd.errors import TokenError
from syftd.log import get_logger

__all__ = ["is_empty_file", "read_job_token", "read_token"]

_MAX_BYTES = 64 * 1024
_log = get_logger("grid")


def is_empty_file(path: Path) -> bool:
    """True for an empty regular file (the service install's placeholder: no token yet); a symlink,
    FIFO or anything else is not, so ``read_token`` refuses it."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size == 0


def read_token(path: Path) -> str:
    """The token in ``path`` without surrounding whitespace.

    Raises:
        TokenError: the file is missing, unreadable, a symlink (its target's content would be sent
            as the token), not a regular file, readable by group or others, larger than 64 KiB, or empty.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise TokenError(f"token file {path} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TokenError(f"token file {path} is a symlink; name the file itself") from None
        raise TokenError(f"token file {path} cannot be opened ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            mode = info.st_mode
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode) else "special"
            raise TokenError(f"token file {path} is not a regular file (it is {kind})")
        if info.st_mode & (stat.S_IRGRP | stat.S_IROTH):
            mode = stat.S_IMODE(info.st_mode)
            raise TokenError(f"token file {path} is readable by group or others (mode {mode:04o}); chmod 600 it")
        raw = os.read(fd, _MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > _MAX_BYTES:
        raise TokenError(f"token file {path} is larger than {_MAX_BYTES} bytes")
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise TokenError(f"token file {path} is not UTF-8 text") from None
    if not token:
        raise TokenError(f"token file {path} is empty")
    return token


def read_job_token(job: str, path: Path) -> tuple[str | None, str | None]:
    """A job's token and the reason it was refused (one of them, or neither), each logged once.

    An empty regular file (the service install's ``LoadCredential=`` placeholder) means no token yet.
    Blocking: call through ``asyncio.to_thread``.
    """
    with contextlib.suppress(OSError):  # a missing file is read_token's to report
        if is_empty_file(path):  # not a FIFO or a symlink: read_token refuses those
            _log.info(events.GRID_TOKEN_EMPTY, job=job, path=str(path), note="no auth_token is sent")
            return None, None
    try:
        token = read_token(path)
    except TokenError as exc:
        _log.error(events.GRID_TOKEN_REFUSED, job=job, path=str(path), error=str(exc))
        return None, str(exc)
    _log.info(events.GRID_TOKEN_LOADED, job=job, path=str(path), length=len(token))
    return token, None
