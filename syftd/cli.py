"""The command line: ``syftd run``, ``syftd check-config`` and the control verbs of ``control.VERBS``.

Owns argument parsing, printing, ``--json`` (on every command, and on errors: one JSON object on
stdout with ``error``, ``kind`` and ``exit_status``) and the mapping of errors to the exit statuses of
``errors.ExitStatus`` (the table ``--help`` prints). Does not own what the verbs do: ``run`` hands over
to ``daemon``, ``check-config`` to ``checkconfig``, the others ask the running daemon over its control
socket (``history``, when no daemon answers, reads the state directory's files: ``historyfile``).
``syftd node …`` (alias ``syftd grid …``) is the local PyGrid-compatible node (``syftd.node.cli``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from syftd import __version__, configfile, control, log
from syftd.errors import EXIT_TABLE, ConfigError, ExitStatus, NoDaemonError, SyftdError, exit_status_of

__all__ = ["EXIT_CONFIG", "EXIT_UNAVAILABLE", "main", "parser"]

EXIT_CONFIG = ExitStatus.CONFIG  # 78: systemd's RestartPreventExitStatus= stops a restart loop on it
EXIT_UNAVAILABLE = ExitStatus.NO_DAEMON  # 69
DEFAULT_CONFIG = Path(os.environ.get("SYFTD_CONFIG", "/etc/syftd/syftd.toml"))


class _Parser(argparse.ArgumentParser):
    """argparse with the usage exit status of the table (64), and a JSON error under ``--json``."""

    wants_json = False

    def error(self, message: str) -> NoReturn:
        if _Parser.wants_json:
            _print_json_error(f"{self.prog}: {message}", ExitStatus.USAGE)
        else:
            self.print_usage(sys.stderr)
            print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(ExitStatus.USAGE)


def parser() -> argparse.ArgumentParser:
    """The whole command line; also the source of the man page and shell completions (build time)."""
    top = _Parser(
        prog="syftd",
        description="Federated-learning worker daemon for PyGrid (model-centric FL).",
        epilog=EXIT_TABLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"syftd {__version__}")
    top.add_argument(
        "--config", "-c", type=Path, default=DEFAULT_CONFIG, help=f"configuration file (default {DEFAULT_CONFIG})"
    )
    top.add_argument("--json", action="store_true", help="print JSON (answers and errors) instead of text")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    # --config and --json are accepted after the verb too (`syftd run --config PATH`)
    common = _Parser(add_help=False)
    common.add_argument("--config", "-c", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    sub.add_parser(
        "run", parents=[common], help="run the daemon in the foreground (systemd, launchd, a terminal)", epilog=""
    )
    check = sub.add_parser("check-config", parents=[common], help="validate a configuration file without starting")
    check.add_argument("path", nargs="?", type=Path, help="file to check (default: --config)")
    check.add_argument("--as-user", metavar="USER", help="check the token files as USER, the daemon's user, would")
    for verb in control.VERBS.values():
        verb_parser = sub.add_parser(verb.name, parents=[common], help=verb.help)
        verb_parser.add_argument(
            "--runtime-dir", type=Path, help="the daemon's runtime directory (default: from the config)"
        )
        for arg in verb.args:
            if arg.flag:
                verb_parser.add_argument(f"--{arg.name.replace('_', '-')}", action="store_true", help=arg.help)
            elif arg.number:
                verb_parser.add_argument(
                    f"--{arg.name.replace('_s', '').replace('_', '-')}", dest=arg.name, type=float, help=arg.help
                )
            else:
                verb_parser.add_argument(
                    arg.name, nargs="?" if arg.optional else None, choices=arg.choices or None, help=arg.help
                )
    sub.add_parser("node", help="the local PyGrid-compatible node (syftd node --help)", add_help=False)
    sub.add_parser("grid", help="alias of node", add_help=False)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``syftd`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    at = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if at is not None and argv[at] in ("node", "grid"):
        from syftd.node.cli import main as node_main

        return int(node_main(argv[at + 1 :]))
    _Parser.wants_json = "--json" in argv
    top = parser()
    args, extra = top.parse_known_args(argv)
    # argparse cannot take an optional positional after an option (`simulate power-loss --for 5 JOB`)
    if len(extra) == 1 and getattr(args, "job", "absent") is None and not extra[0].startswith("-"):
        args.job = extra[0]
    elif extra:
        top.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        top.print_help()
        return ExitStatus.USAGE
    try:
        if args.command == "run":
            return _run(args.config, as_json=args.json)
        if args.command == "check-config":
            return _check_config(args.path or args.config, args.as_user, as_json=args.json)
        return _verb(args)
    except SyftdError as exc:
        return _fail(args, exc)


def _fail(args: argparse.Namespace, exc: SyftdError) -> int:
    status = exit_status_of(exc)
    if args.json:
        _print_json_error(str(exc), status)
    else:
        print(f"syftd {args.command}: {exc}", file=sys.stderr)
    return status


def _print_json_error(message: str, status: ExitStatus) -> None:
    print(json.dumps({"error": message, "kind": status.name.lower(), "exit_status": int(status)}))


def _check_config(path: Path, as_user: str | None, *, as_json: bool) -> int:
    from syftd.checkconfig import check  # imported late: the control verbs need none of it

    as_uid = None
    if as_user is not None:
        try:
            as_uid = pwd.getpwnam(as_user).pw_uid
        except KeyError:
            print(json.dumps({"error": f"no user {as_user!r}"}) if as_json else f"syftd: no user {as_user!r}")
            return ExitStatus.USAGE
    report = check(path, as_uid=as_uid)
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
        return report.exit_status
    if report.problems:
        count = len(report.problems)
        print(f"syftd: invalid configuration in {path} ({count} problem{'s' if count != 1 else ''})", file=sys.stderr)
        for problem in report.problems:
            print(f"  {problem}", file=sys.stderr)
    for warning in report.warnings:
        print(f"syftd: warning: {warning}", file=sys.stderr)
    if not report.problems:
        print(f"{path}: OK ({len(report.jobs)} job{'s' if len(report.jobs) != 1 else ''})")
    return report.exit_status


def _run(path: Path, *, as_json: bool) -> int:
    config = configfile.load(path)
    log_format = "json" if as_json else config.daemon.log_format
    log.configure(log_format, config.daemon.log_level)
    from syftd.daemon import Daemon  # imported late: `syftd status` need not load the daemon

    return asyncio.run(Daemon(config).run())


def _verb(args: argparse.Namespace) -> int:
    verb = control.VERBS[args.command]
    runtime_dir: Path = args.runtime_dir or configfile.runtime_dir_of(args.config)
    params: dict[str, Any] = {arg.name: getattr(args, arg.name, None) for arg in verb.args}
    try:
        answer = asyncio.run(control.call(runtime_dir, verb.name, params))
    except NoDaemonError as exc:
        if verb.name != "history":
            raise
        answer = _history_from_files(args, exc)
    print(json.dumps(answer, indent=2) if args.json else verb.render(answer))
    return ExitStatus.OK


def _history_from_files(args: argparse.Namespace, no_daemon: NoDaemonError) -> dict[str, Any]:
    """``history`` with no daemon answering: the files in the state directory, read-only, saying so."""
    from syftd.historyfile import read_history  # imported late: only this fallback reads the files

    limit = args.limit
    if limit is not None and (limit < 1 or limit != int(limit)):
        _Parser(prog="syftd history").error(f"--limit must be a positive whole number, got {limit:g}")
    try:
        answer = read_history(args.config, args.job, None if limit is None else int(limit))
    except ConfigError as exc:  # no daemon and no configuration to find its files by: both said, 69
        raise NoDaemonError(f"{no_daemon}; nor could the history files be found: {exc}") from None
    note = f"{no_daemon}; read the history files in the state directory instead"
    answer["note"] = note
    if not args.json:
        print(f"syftd history: {note}", file=sys.stderr)
    return answer
