"""Build-time generator: the man page and the bash, zsh and fish completions of ``syftd``.

Reads the one argparse parser (``syftd.cli.parser()``) and the exit-status table
(``syftd.errors.ExitStatus``), so the docs cannot drift from the command line. Run by the install
targets (``make cli-docs``); nothing here is imported at run time.

    python tools/cli_docs.py OUTDIR   ->  OUTDIR/syftd.1  syftd.bash  _syftd  syftd.fish
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from syftd import __version__
from syftd.cli import parser
from syftd.errors import _MEANING, ExitStatus


@dataclass
class Option:
    flags: list[str]
    help: str
    takes_value: bool
    metavar: str
    is_path: bool


@dataclass
class Command:
    name: str
    help: str
    options: list[Option] = field(default_factory=list)
    positionals: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)


def _options(p: argparse.ArgumentParser) -> tuple[list[Option], list[tuple[str, str, tuple[str, ...]]]]:
    options, positionals = [], []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        text = "" if action.help in (None, argparse.SUPPRESS) else str(action.help)
        if action.option_strings:
            takes = action.nargs != 0
            metavar = str(action.metavar or action.dest.upper())
            is_path = action.type is Path
            if action.help == argparse.SUPPRESS and action.dest == "config":
                text, takes, is_path, metavar = "configuration file", True, True, "PATH"
            options.append(Option(list(action.option_strings), text, takes, metavar, is_path))
        else:
            positionals.append((action.dest, text, tuple(action.choices or ())))
    return options, positionals


def model() -> tuple[list[Option], list[Command]]:
    top = parser()
    options, _ = _options(top)
    commands = []
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                command = Command(name, helps.get(name, ""))
                if name != "grid":
                    command.options, command.positionals = _options(sub)
                commands.append(command)
    return options, commands


def _roff(text: str) -> str:
    return text.replace("\\", "\\e").replace("-", "\\-").replace("'", "\\(aq")


def man(options: list[Option], commands: list[Command]) -> str:
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0")) or None
    date = (dt.datetime.fromtimestamp(epoch, dt.timezone.utc) if epoch else dt.datetime.now(dt.timezone.utc)).date()
    out = [
        f'.TH SYFTD 1 "{date.isoformat()}" "syftd {__version__}" "User Commands"',
        ".SH NAME",
        "syftd \\- federated\\-learning worker daemon for PyGrid (model\\-centric FL)",
        ".SH SYNOPSIS",
        ".B syftd",
        "[\\fB\\-\\-config\\fR \\fIPATH\\fR] [\\fB\\-\\-json\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        "syftd joins PyGrid model\\-centric federated\\-learning cycles only while the machine is on AC power",
        "and online, trains in a low\\-priority child process, and reports the diff. \\fBsyftd run\\fR is the",
        "daemon; the other commands ask it over its control socket.",
        ".SH OPTIONS",
    ]
    for option in options:
        out += [".TP", _option_head(option), _roff(option.help)]
    out.append(".SH COMMANDS")
    for command in commands:
        args = " ".join(f"[\\fI{name.upper()}\\fR]" for name, _h, _c in command.positionals)
        out += [".SS", f"\\fB{command.name}\\fR {args}".rstrip(), _roff(command.help)]
        for name, text, choices in command.positionals:
            extra = f" (one of: {', '.join(choices)})" if choices else ""
            out += [".TP", f"\\fI{name.upper()}\\fR", _roff(text + extra)]
        for option in command.options:
            if option.flags[0] not in ("-h", "--config"):
                out += [".TP", _option_head(option), _roff(option.help)]
    out += [".SH EXIT STATUS", ".TS", "l l.", *[f"{int(s)}\t{_roff(_MEANING[s])}" for s in ExitStatus], ".TE"]
    out += [
        ".SH ENVIRONMENT",
        ".TP",
        ".B SYFTD_CONFIG",
        "default configuration file (otherwise /etc/syftd/syftd.toml)",
        ".SH FILES",
        ".TP",
        ".I /etc/syftd/syftd.toml",
        "the configuration; every key is documented in the shipped example",
        ".SH SEE ALSO",
        ".BR systemctl (1),",
        ".BR journalctl (1)",
        "",
    ]
    return "\n".join(out)


def _option_head(option: Option) -> str:
    flags = ", ".join(f"\\fB{_roff(f)}\\fR" for f in option.flags)
    return f"{flags} \\fI{_roff(option.metavar)}\\fR" if option.takes_value else flags


def bash(options: list[Option], commands: list[Command]) -> str:
    names = " ".join(c.name for c in commands)
    top = " ".join(f for o in options for f in o.flags)
    cases = []
    for command in commands:
        words = [f for o in command.options for f in o.flags] + [c for _n, _h, ch in command.positionals for c in ch]
        cases.append(f'        {command.name}) opts="{" ".join(words)}" ;;')
    paths = "|".join(
        sorted({f for c in commands for o in c.options if o.is_path for f in o.flags} | {"--config", "-c"})
    )
    return f"""# bash completion for syftd (generated from its argparse parser by tools/cli_docs.py)
_syftd() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}" command="" i opts
    case "$prev" in
        {paths}) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    esac
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            -c|--config) ((i++)) ;;
            -*) ;;
            *) command="${{COMP_WORDS[i]}}"; break ;;
        esac
    done
    if [[ -z "$command" ]]; then
        COMPREPLY=($(compgen -W "{names} {top}" -- "$cur"))
        return
    fi
    case "$command" in
{chr(10).join(cases)}
        *) opts="" ;;
    esac
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}}
complete -F _syftd syftd
"""


def _zsh_quote(text: str) -> str:
    return text.replace("'", "'\\''").replace("[", "\\[").replace("]", "\\]").replace(":", "\\:")


def _zsh_spec(option: Option) -> str:
    value = f":{option.metavar.lower()}:{'_files' if option.is_path else ' '}" if option.takes_value else ""
    if len(option.flags) > 1:
        return f"'({' '.join(option.flags)})'{{{','.join(option.flags)}}}'[{_zsh_quote(option.help)}]{value}'"
    return f"'{option.flags[0]}[{_zsh_quote(option.help)}]{value}'"


def zsh(options: list[Option], commands: list[Command]) -> str:
    described = "\n".join(f"        '{c.name}:{_zsh_quote(c.help)}'" for c in commands)
    cases = []
    for command in commands:
        specs = [_zsh_spec(o) for o in command.options if o.flags[0] != "-h"]
        for i, (name, text, choices) in enumerate(command.positionals, 1):
            action = f"({' '.join(choices)})" if choices else " "
            specs.append(f"'{i}:{name}:{action}'" if text else f"'{i}::{name}:{action}'")
        cases.append(f"        {command.name}) _arguments {' '.join(specs) or ''} ;;")
    top = " ".join(_zsh_spec(o) for o in options if o.flags[0] != "-h")
    return f"""#compdef syftd
# zsh completion for syftd (generated from its argparse parser by tools/cli_docs.py)
_syftd() {{
    local state
    local -a commands
    commands=(
{described}
    )
    _arguments -C {top} '1: :->command' '*:: :->args'
    case $state in
    command) _describe 'command' commands ;;
    args)
        case $words[1] in
{chr(10).join(cases)}
        esac
        ;;
    esac
}}
_syftd "$@"
"""


def fish(options: list[Option], commands: list[Command]) -> str:
    def line(condition: str, option: Option) -> str:
        parts = []
        for flag in option.flags:
            parts.append(f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}")
        value = (" -r -F" if option.is_path else " -r") if option.takes_value else ""
        return f"complete -c syftd -n '{condition}' {' '.join(parts)}{value} -d '{option.help.replace(chr(39), '')}'"

    out = [
        "# fish completion for syftd (generated from its argparse parser by tools/cli_docs.py)",
        "complete -c syftd -f",
    ]
    out += [line("__fish_use_subcommand", o) for o in options if o.flags[0] != "-h"]
    for command in commands:
        out.append(
            f"complete -c syftd -n __fish_use_subcommand -a {command.name} -d '{command.help.replace(chr(39), '')}'"
        )
        seen = f"__fish_seen_subcommand_from {command.name}"
        out += [line(seen, o) for o in command.options if o.flags[0] != "-h"]
        for _name, _text, choices in command.positionals:
            if choices:
                out.append(f"complete -c syftd -n '{seen}' -a '{' '.join(choices)}'")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write(str(__doc__))
        return 64
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    options, commands = model()
    for name, text in (
        ("syftd.1", man(options, commands)),
        ("syftd.bash", bash(options, commands)),
        ("_syftd", zsh(options, commands)),
        ("syftd.fish", fish(options, commands)),
    ):
        (out / name).write_text(text)
    sys.stdout.write(f"wrote {out}/syftd.1, syftd.bash, _syftd, syftd.fish\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
