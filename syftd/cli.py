"""The command line: ``syftd run``, ``syftd check-config`` and the control verbs of ``control.VERBS``.

Owns argument parsing, exit statuses (78 for a configuration error, 69 when no daemon answers) and
printing. Does not own what the verbs do: ``run`` hands over to ``daemon``, the others ask the running
daemon over its control socket. ``syftd node …`` (alias ``syftd grid …``) is the local
PyGrid-compatible node (``syftd.node.cli``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from syftd import __version__, control, log
from syftd import config as config_mod
from syftd.errors import ConfigError, ControlError

__all__ = ["EXIT_CONFIG", "EXIT_UNAVAILABLE", "main"]

EXIT_CONFIG = os.EX_CONFIG  # 78: systemd's RestartPreventExitStatus= stops a restart loop on it
EXIT_UNAVAILABLE = os.EX_UNAVAILABLE  # 69
DEFAULT_CONFIG = Path(os.environ.get("SYFTD_CONFIG", "/etc/syftd/syftd.toml"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syftd", description="Federated-learning worker daemon for PyGrid (model-centric FL)."
    )
    parser.add_argument("--version", action="version", version=f"syftd {__version__}")
    parser.add_argument(
        "--config", "-c", type=Path, default=DEFAULT_CONFIG, help=f"configuration file (default {DEFAULT_CONFIG})"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # --config is accepted after the verb too (`syftd run --config PATH`)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub.add_parser("run", parents=[common], help="run the daemon in the foreground (systemd, launchd, a terminal)")
    check = sub.add_parser("check-config", parents=[common], help="validate a configuration file without starting")
    check.add_argument("path", nargs="?", type=Path, help="file to check (default: --config)")
    for verb in control.VERBS.values():
        verb_parser = sub.add_parser(verb.name, parents=[common], help=verb.help)
        verb_parser.add_argument(
            "--runtime-dir", type=Path, help="the daemon's runtime directory (default: from the config)"
        )
        if verb.name == "status":
            verb_parser.add_argument("--json", action="store_true", help="print the raw JSON answer")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``syftd`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    at = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if at is not None and argv[at] in ("node", "grid"):
        from syftd.node.cli import main as node_main

        return int(node_main(argv[at + 1 :]))
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # argparse cannot take an optional positional after an option (`simulate power-loss --for 5 JOB`)
    if len(extra) == 1 and getattr(args, "job", "absent") is None and not extra[0].startswith("-"):
        args.job = extra[0]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        _parser().print_help()
        return 2
    if args.command == "run":
        return _run(args.config)
    if args.command == "check-config":
        return _check_config(args.path or args.config)
    return _verb(args)


def _load_or_report(path: Path) -> config_mod.Config | None:
    try:
        return config_mod.load(path)
    except ConfigError as exc:
        print(f"syftd: {exc}", file=sys.stderr)
        return None


def _check_config(path: Path) -> int:
    config = _load_or_report(path)
    if config is None:
        return EXIT_CONFIG
    print(f"{path}: OK ({len(config.job)} job{'s' if len(config.job) != 1 else ''})")
    return 0


def _run(path: Path) -> int:
    config = _load_or_report(path)
    if config is None:
        return EXIT_CONFIG
    log.configure(config.daemon.log_format, config.daemon.log_level)
    from syftd.daemon import Daemon  # imported late: `syftd status` need not load the daemon

    return asyncio.run(Daemon(config).run())


def _verb(args: argparse.Namespace) -> int:
    verb = control.VERBS[args.command]
    runtime_dir: Path = args.runtime_dir or config_mod.runtime_dir_of(args.config)
    params: dict[str, Any] = {arg.name: getattr(args, arg.name, None) for arg in verb.args}
    try:
        answer = asyncio.run(control.call(runtime_dir, verb.name, params))
    except ControlError as exc:
        print(f"syftd {verb.name}: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(json.dumps(answer, indent=2) if getattr(args, "json", False) else verb.render(answer))
    return 0
