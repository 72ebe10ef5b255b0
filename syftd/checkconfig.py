"""``syftd check-config``: everything that can be known about a configuration before starting.

Owns the report: the configuration's problems (per-key and cross-key side by side, from
``syftd.configfile``), the token files' problems (the daemon refuses a token file readable by group or
others; one owned by another user is refused here too), and warnings that do not make the file
invalid (this installation cannot train). Does not own the schema (``config``), the token reading
(``grid.token``) or the printing (``cli``).
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syftd import capability, configfile
from syftd.errors import ConfigError, ExitStatus, TokenError
from syftd.grid.token import read_token

__all__ = ["Report", "check", "token_file_problems"]


@dataclass
class Report:
    """What check-config found; ``problems`` make the file invalid (exit status 78), warnings do not."""

    path: Path
    jobs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_status(self) -> ExitStatus:
        """78 with any problem, else 0."""
        return ExitStatus.CONFIG if self.problems else ExitStatus.OK

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` answer."""
        return {
            "path": str(self.path),
            "ok": not self.problems,
            "jobs": self.jobs,
            "problems": self.problems,
            "warnings": self.warnings,
            "exit_status": int(self.exit_status),
        }


def check(path: Path, *, as_uid: int | None = None, can_train: str | None = "probe") -> Report:
    """Check the file at ``path``; token files as user ``as_uid`` would (default: this user).

    ``can_train`` is the trainability verdict: ``"probe"`` asks ``capability``; tests pass None or a reason.
    """
    report = Report(path)
    try:
        config = configfile.load(path)
    except ConfigError as exc:
        report.problems = list(exc.problems)
        config = None
    if config is not None:
        report.jobs = [job.name for job in config.job]
        for i, job in enumerate(config.job):
            if job.grid.token_file is not None:
                key = f"job[{i}].grid.token_file"
                found = token_file_problems(job.grid.token_file, as_uid=as_uid)
                report.problems += [f"{key}: {p}" for p in found]
                if not found and os.stat(job.grid.token_file).st_size == 0:
                    report.warnings.append(f"{key}: {job.grid.token_file} is empty: no token is sent to the node")
        report.problems.sort()
    reason = capability.training_unavailable() if can_train == "probe" else can_train
    trains_here = config is None or any(job.kind == "pygrid" for job in config.job)  # flower: its own venv
    if reason is not None and trains_here:
        report.warnings.append(reason)
    return report


def token_file_problems(path: Path, *, as_uid: int | None = None) -> list[str]:
    """What is wrong with a token file for a daemon running as ``as_uid`` (default: this user).

    An empty file is no problem (no token is sent). The owner must be that user or root. Checked by
    root without ``as_uid``, any owner is accepted:
    root cannot tell which user the service runs as (systemd's ``LoadCredential=`` reads as root).
    """
    uid = os.getuid() if as_uid is None else as_uid
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return [f"token file {path} does not exist"]
    except OSError as exc:
        return [f"token file {path} cannot be examined ({exc.strerror})"]
    if not stat.S_ISREG(info.st_mode):
        return [f"token file {path} is not a regular file"]
    problems = []
    mode = stat.S_IMODE(info.st_mode)
    if mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWGRP | stat.S_IWOTH):
        problems.append(f"token file {path} is open to group or others (mode {mode:04o}); chmod 600 it")
    if info.st_uid not in (uid, 0) and not (uid == 0 and as_uid is None):
        problems.append(
            f"token file {path} is owned by {_user(info.st_uid)}, not by {_user(uid)} (the daemon's user) "
            "or root; chown it to the daemon's user"
        )
    if not problems and info.st_size > 0 and (as_uid is None or as_uid == os.getuid()):
        try:
            read_token(path)
        except TokenError as exc:
            problems.append(str(exc))
    return problems


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
