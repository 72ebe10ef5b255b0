"""Turning a parsed TOML document into frozen dataclasses, collecting every problem with its dotted key.

Owns the generic walk over dataclass fields and their types (bool, int, float, str, ``Path`` with
``$VAR`` expansion, ``Literal``, optional, tuples, nested dataclasses, arrays of tables), range and
custom checks from field metadata (``min``, ``max``, ``check``), unknown keys with a "did you mean",
and the wording of each problem. Does not own any key: the schema is ``syftd.config``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

__all__ = ["INVALID", "build", "describe", "too_deep"]

INVALID: Any = object()
"""What a conversion returns after it appended a problem."""

_ENV_REF = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def build(cls: type[Any], table: Mapping[str, Any], prefix: str, problems: list[str]) -> Any:
    """Build dataclass ``cls`` from ``table``; append problems and return None if any field failed."""
    hints = typing.get_type_hints(cls)
    known = [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]
    names = {f.name for f in known}
    ok = True
    for key in table:
        if key not in names:
            hint = difflib.get_close_matches(key, sorted(names), n=1)
            suggestion = f'; did you mean "{prefix}{hint[0]}"?' if hint else ""
            problems.append(f"{prefix}{key}: unknown key{suggestion}")
            ok = False
    values: dict[str, Any] = {}
    for f in known:
        dotted = f"{prefix}{f.name}"
        if f.name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{dotted}: required key is missing")
                ok = False
            continue
        value = _convert(hints[f.name], table[f.name], dotted, problems, f.metadata)
        if value is INVALID:
            ok = False
        else:
            values[f.name] = value
    return cls(**values) if ok else None


def too_deep(document: Mapping[str, Any], limit: int) -> str | None:
    """The dotted key of a value nested deeper than ``limit`` levels, or None (an iterative walk: a
    deep document must not exhaust the stack here either)."""
    stack: list[tuple[Any, str, int]] = [(document, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > limit:
            return re.sub(r"(\[\d+\])+$", "", where) or "<toml>"  # the key, not its 33 indexes
        if isinstance(value, dict):
            stack.extend((v, f"{where}.{k}" if where else str(k), depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value))
    return None


def describe(value: Any) -> str:
    """``repr`` of a value as problems quote it, cut at 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(f'"{a}"' for a in typing.get_args(tp))
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp in (str, Path):
        return "a string"
    if origin is tuple:
        return "an array"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return str(tp)


def _convert(tp: Any, raw: Any, dotted: str, problems: list[str], meta: Mapping[str, Any]) -> Any:
    """Turn a TOML value into ``tp``, checking range and custom checks; INVALID on a problem."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        # TOML has no null: an optional key is left out to mean "unset"
        return _convert(inner[0], raw, dotted, problems, meta)
    if origin is tuple:
        item_type = args[0]
        is_table_array = dataclasses.is_dataclass(item_type)
        if not isinstance(raw, list):
            want = "an array of tables ([[...]])" if is_table_array else "an array"
            problems.append(f"{dotted}: must be {want}, got {describe(raw)}")
            return INVALID
        items = []
        for i, item in enumerate(raw):
            items.append(_convert(item_type, item, f"{dotted}[{i}]", problems, meta))
        return INVALID if any(v is INVALID for v in items) else tuple(items)
    if dataclasses.is_dataclass(tp):
        if not isinstance(raw, dict):
            problems.append(f"{dotted}: must be a table, got {describe(raw)}")
            return INVALID
        built = build(typing.cast(type[Any], tp), raw, f"{dotted}.", problems)
        return INVALID if built is None else built
    if tp is Path and isinstance(raw, str) and (unset := _unset_env(raw)):
        names = ", ".join(f"${name}" for name in unset)
        problems.append(f"{dotted}: environment variable {names} is not set, got {describe(raw)}")
        return INVALID
    if tp is Path and isinstance(raw, str) and (empty := _empty_env(raw)):
        names = ", ".join(f"${name}" for name in empty)
        problems.append(f"{dotted}: environment variable {names} is empty, got {describe(raw)}")
        return INVALID
    value = _scalar(tp, raw)
    if value is INVALID:
        problems.append(f"{dotted}: must be {_type_name(tp)}, got {describe(raw)}")
        return INVALID
    low, high = meta.get("min"), meta.get("max")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value != value or value in (float("inf"), float("-inf")):
            problems.append(f"{dotted}: must be a finite number, got {describe(raw)}")
            return INVALID
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"from {low:g} to {high:g}" if high is not None else f"at least {low:g}"
            problems.append(f"{dotted}: must be {bounds}, got {describe(raw)}")
            return INVALID
    check = meta.get("check")
    if check is not None and (message := check(value)) is not None:
        problems.append(f"{dotted}: {message}, got {describe(raw)}")
        return INVALID
    return value


def _scalar(tp: Any, raw: Any) -> Any:
    if typing.get_origin(tp) is Literal:
        return raw if isinstance(raw, str) and raw in typing.get_args(tp) else INVALID
    if tp is bool:
        return raw if isinstance(raw, bool) else INVALID
    if tp is int:
        return raw if isinstance(raw, int) and not isinstance(raw, bool) else INVALID
    if tp is float:
        return float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else INVALID
    if tp is str:
        return raw if isinstance(raw, str) else INVALID
    if tp is Path:
        # path keys may name $VAR or ${VAR}, e.g. "${CREDENTIALS_DIRECTORY}/token" under systemd
        ok = isinstance(raw, str) and raw and "\0" not in raw
        return Path(os.path.expandvars(raw)) if ok else INVALID
    raise TypeError(f"config schema uses an unsupported type {tp!r}; extend tomlschema._scalar")


def _empty_env(raw: str) -> list[str]:
    """The variables ``raw`` refers to that are set to the empty string (``$X/data`` would become ``/data``)."""
    return [name for braced, bare in _ENV_REF.findall(raw) if os.environ.get(name := braced or bare) == ""]


def _unset_env(raw: str) -> list[str]:
    """The variables ``raw`` refers to as $NAME or ${NAME} that the environment does not set."""
    return [name for braced, bare in _ENV_REF.findall(raw) if (name := braced or bare) not in os.environ]
