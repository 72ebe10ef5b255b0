"""The control socket: a small HTTP API over a Unix socket, and the one registry of CLI verbs.

Owns the registry (``VERBS``: each CLI verb's route, arguments and rendering), the server that checks
each peer's uid (``syftd.peercred``: only the daemon's own uid and root), and the client the CLI uses. Does
not own what the answers contain: the daemon hands in one handler per verb. A later feature adds a
``Verb`` here and a handler in the daemon, never a second socket.

Nothing a client sends reaches a handler unchecked: every field is checked against the verb's ``Arg``
(a string, a flag that is ``true``/``false``, a positive finite number, one of the choices; unknown
fields refused), with a 400 naming the field. A client has ``CLIENT_TIMEOUT_S`` to send its request
(headers and body). The server refuses a runtime directory another user could write to (group- or
world-writable without the sticky bit, or owned by another user) and never follows or replaces a
symlink or a non-socket at the socket's path.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import stat
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from syftd import events
from syftd.errors import AlreadyRunningError, ControlError, NoDaemonError, PeerRefusedError, UnknownJobError
from syftd.log import get_logger
from syftd.peercred import peer_uid

__all__ = [
    "CLIENT_TIMEOUT_S",
    "SOCKET_NAME",
    "VERBS",
    "Arg",
    "ControlServer",
    "ControlStartError",
    "Handler",
    "Verb",
    "call",
    "check_params",
    "socket_path",
]

SOCKET_NAME = "control.sock"
CLIENT_TIMEOUT_S = 5.0
"""How long a client may take to send a whole request; a slower one is disconnected."""
_log = get_logger("syftd.control")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Arg:
    """One CLI argument of a verb; it travels as a JSON body field of the same name."""

    name: str
    help: str
    optional: bool = True
    flag: bool = False
    choices: tuple[str, ...] = ()
    number: bool = False


@dataclass(frozen=True, slots=True)
class Verb:
    """A CLI verb and its control-socket route."""

    name: str
    help: str
    method: str = "POST"
    args: tuple[Arg, ...] = ()
    render: Callable[[Any], str] = field(default=lambda answer: json.dumps(answer, indent=2))

    @property
    def path(self) -> str:
        """The HTTP path of the verb."""
        return f"/v1/{self.name}"


def _render_status(answer: Any) -> str:
    rows = [("JOB", "STATE", "LAST OUTCOME", "NEXT RUN")]
    for job in answer.get("jobs", []):
        rows.append(
            (
                job["name"],
                job.get("state", "?"),
                job.get("last_outcome") or "-",
                job.get("next_run") or "-",
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    head = [f"syftd {answer.get('version', '')} pid {answer.get('pid', '?')}: {answer.get('status', '')}"]
    # a last cycle that failed or was cut short says why under the table (``--json`` has it whole)
    errors = [
        f"{job['name']}: last error: {_first_words(error)}"
        for job in answer.get("jobs", [])
        if (error := (job.get("last") or {}).get("error"))
    ]
    return "\n".join(head + lines + errors)


def _render_why(answer: Any) -> str:
    lines = [f"{answer['job']}: {answer['summary']}"]
    lines += [f"  - {reason}" for reason in answer.get("reasons", [])]
    return "\n".join(lines)


def _render_message(answer: Any) -> str:
    return str(answer.get("message", answer))


def _render_history(answer: Any) -> str:
    rows = [("TIME", "JOB", "CYCLE", "OUTCOME", "STEPS", "SECONDS", "ENERGY", "ERROR")]
    for entry in answer.get("entries", []):
        at = entry.get("time")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if isinstance(at, int | float) else "?"
        outcome = f"{entry.get('outcome')}" + (f" ({entry['reason']})" if entry.get("reason") else "")
        joules = entry.get("energy_j")
        energy = f"{joules:.1f} J" if isinstance(joules, int | float) else str(joules or "-")
        seconds = entry.get("duration_s")
        duration = f"{seconds:.1f}" if isinstance(seconds, int | float) else "-"
        cycle = str(entry.get("cycle_id") or "-")[:12]
        error = _first_words(entry.get("error"))
        rows.append(
            (when, entry.get("job", "?"), cycle, outcome, str(entry.get("steps", "-")), duration, energy, error)
        )
    if len(rows) == 1:
        return "no cycles recorded yet"
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _first_words(error: Any, width: int = 120) -> str:
    """A record's error for a one-line table: its first line, cut at ``width`` (``--json`` has it whole)."""
    if not error:
        return "-"
    line = str(error).splitlines()[0] if str(error).strip() else "-"
    return line if len(line) <= width else line[: width - 1] + "…"


_JOB = Arg("job", "job name (default: every enabled job)")

VERBS: dict[str, Verb] = {
    verb.name: verb
    for verb in (
        Verb("status", "show every job: state, last outcome, next run", method="GET", render=_render_status),
        Verb(
            "why",
            "explain why a job is or is not running",
            method="GET",
            args=(Arg("job", "job name", optional=False),),
            render=_render_why,
        ),
        Verb(
            "trigger",
            "run a job now, as if its schedule were due (still gated by its constraints)",
            args=(_JOB, Arg("force", "ignore the constraints too (logged)", flag=True)),
            render=_render_message,
        ),
        Verb(
            "history",
            "show the kept outcomes of each job's cycles, oldest first (no daemon: from the state directory)",
            method="GET",
            args=(Arg("job", "job name (default: every job)"), Arg("limit", "only the newest N per job", number=True)),
            render=_render_history,
        ),
        Verb("expire", "expire the running cycle of a job (as the OS would)", args=(_JOB,), render=_render_message),
        Verb(
            "simulate",
            "override a condition through the real decision path, as the OS would",
            args=(
                Arg("event", "what to simulate", optional=False, choices=("power-loss", "network-loss", "clear")),
                Arg("for_s", "how long, in seconds (default: until cleared)", number=True),
                _JOB,
            ),
            render=_render_message,
        ),
    )
}


class ControlStartError(ControlError):
    """The control socket cannot be served; ``status`` is the daemon's exit status (78: fix the
    configuration or the directory, 75: another daemon already answers there)."""

    def __init__(self, message: str, status: int = os.EX_CONFIG) -> None:
        super().__init__(message)
        self.status = status


def check_params(verb: Verb, params: Mapping[str, Any]) -> str | None:
    """What is wrong with a request's fields for ``verb``, naming the field; None when they are fine."""
    args = {arg.name: arg for arg in verb.args}
    for name in params:
        if name not in args:
            return f"{name}: unknown field for {verb.name} (fields: {', '.join(args) or 'none'})"
    for name, arg in args.items():
        value = params.get(name)
        if value is None:
            if not arg.optional:
                return f"{name}: required"
        elif arg.flag:
            if not isinstance(value, bool):
                return f"{name}: must be true or false, got {json.dumps(value)[:40]}"
        elif arg.number:
            if isinstance(value, str):  # a GET verb's query string carries its numbers as text
                try:
                    value = float(value)
                except ValueError:
                    return f"{name}: must be a positive finite number, got {str(value)[:40]!r}"
            finite = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            if not finite or value <= 0:
                return f"{name}: must be a positive finite number, got {str(value)[:40]}"
        elif not isinstance(value, str):
            return f"{name}: must be a string, got {type(value).__name__}"
        elif arg.choices and value not in arg.choices:
            return f"{name}: must be one of {', '.join(arg.choices)}, got {value[:40]!r}"
    return None


def _check_runtime_dir(directory: Path) -> None:
    """Refuse a directory where another user could plant or replace the control socket."""
    info = os.stat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise ControlStartError(f"runtime directory {directory} is not a directory")
    own = os.geteuid()
    if info.st_uid not in (own, 0):
        raise ControlStartError(
            f"runtime directory {directory} is owned by uid {info.st_uid}, not by this user ({own}) or root; "
            "another user could replace the control socket"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH) and not mode & stat.S_ISVTX:
        raise ControlStartError(
            f"runtime directory {directory} is writable by group or others without the sticky bit "
            f"(mode {mode:04o}); another user could replace the control socket: chmod 0700 it"
        )


def socket_path(runtime_dir: Path) -> Path:
    """Where the daemon listens."""
    return runtime_dir / SOCKET_NAME


def _peer_uid(request: web.Request) -> int | None:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    return None if sock is None else peer_uid(sock)


class ControlServer:
    """Serves ``VERBS`` on ``<runtime_dir>/control.sock``, to the daemon's own uid and root only."""

    def __init__(self, runtime_dir: Path, handlers: Mapping[str, Handler]) -> None:
        missing = set(VERBS) - set(handlers)
        if missing:
            raise ValueError(f"ControlServer needs a handler for every verb; missing {sorted(missing)}")
        self.path = socket_path(runtime_dir)
        self._handlers = handlers
        self._runner: web.AppRunner | None = None
        self._own_uid = os.getuid()

    async def start(self) -> None:
        """Listen; a stale socket file of a dead daemon is replaced, a live one is an error.

        Raises:
            AlreadyRunningError: another daemon already answers on this socket.
            ControlStartError: the runtime directory is open to other users, or something other than a
                socket is at the socket's path.
        """
        if self._runner is not None:
            raise RuntimeError("ControlServer.start() called twice")
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _check_runtime_dir(self.path.parent)
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ControlStartError(f"runtime directory {self.path.parent} is not usable: {exc.strerror}") from None
        else:
            if not stat.S_ISSOCK(mode):
                kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a socket"
                raise ControlStartError(f"{self.path} is {kind}; not followed nor replaced: remove it")
            if await _is_alive(self.path):
                raise AlreadyRunningError(self.path, what="control socket")
            self.path.unlink()
        app = web.Application(middlewares=[self._check_peer])
        for verb in VERBS.values():
            app.router.add_route(verb.method, verb.path, self._make_route(verb))
        # keepalive_timeout also bounds a connection whose first request is not complete (aiohttp >= 3.10);
        # lingering_time=0: a client that stalled mid-body is not waited on again after its 408
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, keepalive_timeout=CLIENT_TIMEOUT_S, lingering_time=0
        )
        await runner.setup()
        try:
            old_umask = os.umask(0o177)
            try:
                await web.UnixSite(runner, str(self.path)).start()
            finally:
                os.umask(old_umask)
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        _log.debug(events.CONTROL_LISTENING, path=str(self.path))

    async def stop(self) -> None:
        """Stop listening and remove the socket file; idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await asyncio.wait_for(runner.cleanup(), timeout=5)
            self.path.unlink(missing_ok=True)

    @web.middleware
    async def _check_peer(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        uid = _peer_uid(request)
        if uid is None or uid not in (self._own_uid, 0):
            _log.warning(events.CONTROL_PEER_REFUSED, peer_uid=uid, path=request.path)
            return web.json_response({"error": "permission denied: only the daemon's user and root"}, status=403)
        return await handler(request)

    def _make_route(self, verb: Verb) -> Callable[[web.Request], Awaitable[web.Response]]:
        handler = self._handlers[verb.name]

        async def route(request: web.Request) -> web.Response:
            params: dict[str, Any] = dict(request.query)
            if request.can_read_body:
                try:
                    body = await asyncio.wait_for(request.json(), CLIENT_TIMEOUT_S)
                except asyncio.TimeoutError:
                    slow = web.json_response({"error": "request body not received in time"}, status=408)
                    slow.force_close()
                    return slow
                except (json.JSONDecodeError, UnicodeDecodeError):
                    return web.json_response({"error": "body must be a JSON object"}, status=400)
                if not isinstance(body, dict):
                    return web.json_response({"error": "body must be a JSON object"}, status=400)
                params.update(body)
            if (problem := check_params(verb, params)) is not None:
                return web.json_response({"error": problem}, status=400)
            try:
                answer = await handler(params)
            except LookupError as exc:
                return web.json_response({"error": str(exc.args[0] if exc.args else exc)}, status=404)
            except ValueError as exc:
                return web.json_response({"error": str(exc)}, status=400)
            return web.json_response(answer)

        return route


async def _is_alive(path: Path) -> bool:
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), timeout=1)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    return True


async def call(runtime_dir: Path, verb_name: str, params: Mapping[str, Any], *, timeout_s: float = 10) -> Any:
    """Ask the running daemon; returns its JSON answer.

    Raises:
        ControlError: no daemon listens, access was refused, or the answer was an error.
    """
    verb = VERBS[verb_name]
    path = socket_path(runtime_dir)
    if not path.exists():
        raise NoDaemonError(f"no syftd is running: {path} does not exist (is daemon.runtime_dir right?)")
    if path.is_symlink():
        raise ControlError(f"{path} is a symbolic link, not the daemon's socket; not followed")
    connector = aiohttp.UnixConnector(path=str(path))
    query: Sequence[tuple[str, str]] = []
    body: dict[str, Any] | None = None
    if verb.method == "GET":
        query = [(k, str(v)) for k, v in params.items() if v is not None]
    else:
        body = {k: v for k, v in params.items() if v is not None}
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.request(verb.method, f"http://syftd{verb.path}", params=query, json=body) as resp,
        ):
            answer = await resp.json(content_type=None)
            status = resp.status
    except PermissionError as exc:
        raise PeerRefusedError(f"permission denied on {path}: run as the daemon's user or root") from exc
    except (aiohttp.ClientConnectionError, ConnectionRefusedError) as exc:
        if isinstance(getattr(exc, "os_error", None), PermissionError):
            raise PeerRefusedError(f"permission denied on {path}: run as the daemon's user or root") from exc
        raise NoDaemonError(f"no syftd is answering on {path} ({exc})") from exc
    except asyncio.TimeoutError as exc:
        raise NoDaemonError(f"syftd did not answer on {path} within {timeout_s:g} s") from exc
    except json.JSONDecodeError as exc:
        raise ControlError(f"syftd did not answer properly on {path} ({exc!r})") from exc
    if status != 200:
        message = answer.get("error") if isinstance(answer, dict) else answer
        kind = {404: UnknownJobError, 403: PeerRefusedError}.get(status, ControlError)
        raise kind(f"syftd refused {verb_name}: {message}")
    return answer
