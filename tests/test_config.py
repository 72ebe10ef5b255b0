"""The configuration loader: every key type, unknown keys, wrong types, ranges, cross-key checks."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syftd import config, configfile
from syftd.errors import ConfigError

MINIMAL = """
[[job]]
name = "mnist"
[job.grid]
url = "https://grid.example.org"
model = "mnist"
version = "1.0"
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        configfile.loads(text)
    return list(info.value.problems)


def test_the_shipped_example_loads_and_equals_the_defaults() -> None:
    """config/syftd.toml documents every key with its default value."""
    example = configfile.load(Path(__file__).parents[1] / "config" / "syftd.toml")
    job = example.job[0]
    assert example.daemon == config.DaemonConfig()
    assert job.constraints == config.ConstraintsConfig()
    assert job.schedule == config.ScheduleConfig()
    assert job.budget == config.BudgetConfig()
    assert job.trainer == config.TrainerConfig()
    assert job.data == config.DataConfig()


def test_every_schema_key_is_documented_in_the_example() -> None:
    """Each key of each table appears in config/syftd.toml (commented out when it has no default)."""
    text = (Path(__file__).parents[1] / "config" / "syftd.toml").read_text()
    for cls in (
        config.DaemonConfig,
        config.ConditionsConfig,
        config.GridConfig,
        config.DataConfig,
        config.ConstraintsConfig,
        config.ScheduleConfig,
        config.BudgetConfig,
        config.TrainerConfig,
    ):
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(typing.get_type_hints(cls)[f.name]):
                continue
            assert f"{f.name} =" in text, f"{cls.__name__}.{f.name} is not in config/syftd.toml"


def test_minimal_file_gets_defaults() -> None:
    """Only the required keys: everything else takes its documented default."""
    loaded = configfile.loads(MINIMAL)
    assert loaded.daemon.shutdown_grace_s == 8.0
    assert loaded.job[0].constraints.requires_external_power is True
    assert loaded.job[0].constraints.stable_for_s == 30.0
    assert loaded.job[0].budget.max_cycle_s == 1800.0
    assert loaded.job_named("mnist") is loaded.job[0]


def test_an_empty_file_is_a_daemon_with_no_jobs() -> None:
    """No [[job]] is valid: the daemon idles."""
    assert configfile.loads("").job == ()


def test_missing_required_keys_are_each_named() -> None:
    """Each required key that is missing gets its own line with the dotted path."""
    assert problems_of("[[job]]\n[job.grid]\n") == [
        "job[0].grid.model: required key is missing",
        "job[0].grid.url: required key is missing",
        "job[0].grid.version: required key is missing",
        "job[0].name: required key is missing",
    ]


def test_unknown_keys_get_a_suggestion() -> None:
    """A misspelt key is reported with the closest known key."""
    found = problems_of(MINIMAL + "[job.constraints]\nrequires_externl_power = true\n[daemon]\nshutdown_grace = 3\n")
    assert (
        "job[0].constraints.requires_externl_power: unknown key; did you mean "
        '"job[0].constraints.requires_external_power"?' in found
    )
    assert 'daemon.shutdown_grace: unknown key; did you mean "daemon.shutdown_grace_s"?' in found


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ('[daemon]\nshutdown_grace_s = "8"', "daemon.shutdown_grace_s: must be a number, got '8'"),
        ("[daemon]\nshutdown_grace_s = true", "daemon.shutdown_grace_s: must be a number, got True"),
        ("[daemon]\nmax_concurrent_jobs = 1.5", "daemon.max_concurrent_jobs: must be an integer, got 1.5"),
        ('[daemon]\nlog_format = "xml"', 'daemon.log_format: must be one of "auto", "json", "console", got \'xml\''),
        ("[daemon]\nstate_dir = 3", "daemon.state_dir: must be a string, got 3"),
        ('[daemon]\nstate_dir = ""', "daemon.state_dir: must be a string, got ''"),
        ("[daemon]\nshutdown_grace_s = 0", "daemon.shutdown_grace_s: must be from 0.1 to 600, got 0"),
        ("[daemon]\nshutdown_grace_s = nan", "daemon.shutdown_grace_s: must be a finite number, got nan"),
        ("[daemon.conditions]\npoll_interval_s = -1", "daemon.conditions.poll_interval_s: must be from 0.05"),
        ("daemon = 3", "daemon: must be a table, got 3"),
        ("job = 3", "job: must be an array of tables ([[...]]), got 3"),
    ],
)
def test_wrong_types_and_ranges_are_named(snippet: str, expected: str) -> None:
    """Each wrong value names its key, what was expected, and what it got."""
    found = problems_of(
        MINIMAL.replace("[[job]]", snippet + "\n[[job]]", 1) if not snippet.startswith("job") else snippet
    )
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize(
    ("table", "snippet", "expected"),
    [
        ("constraints", "min_battery_percent = 120", "job[0].constraints.min_battery_percent: must be from 0 to 100"),
        ("constraints", "requires_idle = 1", "job[0].constraints.requires_idle: must be true or false"),
        ("schedule", 'windows = ["25:00-07:00"]', 'job[0].schedule.windows[0]: must look like "HH:MM-HH:MM"'),
        ("schedule", 'windows = "22:00-07:00"', "job[0].schedule.windows: must be an array"),
        ("schedule", 'earliest_start = "tomorrow"', "job[0].schedule.earliest_start: must be an ISO 8601"),
        ("schedule", 'on_finished = "never"', 'job[0].schedule.on_finished: must be one of "retry", "stop"'),
        ("data", 'callable = "nofunction"', 'job[0].data.callable: must look like "package.module:function"'),
        ("trainer", "nice = 20", "job[0].trainer.nice: must be from 0 to 19"),
        ("budget", "expiry_grace_s = 9", "job[0].budget.expiry_grace_s: must be at most daemon.shutdown_grace_s (8)"),
    ],
)
def test_job_subtables_are_checked(table: str, snippet: str, expected: str) -> None:
    """Values in the job's sub-tables are checked with their dotted key."""
    found = problems_of(MINIMAL + f"[job.{table}]\n{snippet}\n")
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize(
    ("url", "insecure", "expected"),
    [
        ("ftp://grid", False, "scheme must be http, https, ws or wss"),
        ("https://", False, "has no host"),
        ("http://grid.example.org", False, "plain http/ws is allowed only to a loopback host"),
        ("ws://10.0.0.1:5000", False, "plain http/ws is allowed only to a loopback host"),
        ("http://grid.example.org:99999", False, "not a valid URL"),
    ],
)
def test_grid_url_is_validated_when_the_config_loads(url: str, insecure: bool, expected: str) -> None:
    """grid.url: a scheme of http/https/ws/wss, a host, and TLS unless loopback or allow_insecure."""
    text = MINIMAL.replace("https://grid.example.org", url)
    if insecure:
        text += "allow_insecure = true\n"
    found = problems_of(text)
    assert any(p.startswith("job[0].grid.url: " + expected) for p in found), found


@pytest.mark.parametrize("url", ["http://127.0.0.1:5000", "ws://localhost", "http://[::1]:5000", "wss://g.example"])
def test_loopback_or_tls_urls_are_accepted(url: str) -> None:
    """Loopback over plain http/ws and anything over TLS load fine."""
    assert configfile.loads(MINIMAL.replace("https://grid.example.org", url)).job[0].grid.url == url


def test_insecure_remote_url_needs_the_explicit_switch() -> None:
    """allow_insecure = true admits plain http to another host."""
    text = MINIMAL.replace("https://grid.example.org", "http://grid.example.org") + "allow_insecure = true\n"
    assert configfile.loads(text).job[0].grid.allow_insecure is True


def test_duplicate_job_names_and_missing_data_paths_are_reported_together() -> None:
    """Cross-key checks all appear in one error."""
    text = MINIMAL + '[job.data]\nsource = "mnist"\n' + MINIMAL
    found = problems_of(text)
    assert "job[0].data.path: required when data.source is 'mnist'" in found
    assert any(p.startswith("job[1].name: duplicate job name (also job[0])") for p in found)


def test_toml_syntax_errors_are_reported_as_config_errors() -> None:
    """Broken TOML is a ConfigError too, with the parser's position."""
    found = problems_of("[daemon\n")
    assert found[0].startswith("<toml>:")


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing file is reported, not raised as OSError."""
    with pytest.raises(ConfigError, match="cannot read"):
        configfile.load(tmp_path / "missing.toml")


def test_error_message_lists_problems_sorted_under_a_header(tmp_path: Path) -> None:
    """The message: a header with the path and count, then one indented line per problem."""
    path = tmp_path / "s.toml"
    path.write_text("[daemon]\nshutdown_grace_s = 0\nlog_level = 'loud'\n")
    with pytest.raises(ConfigError) as info:
        configfile.load(path)
    lines = str(info.value).splitlines()
    assert lines[0] == f"invalid configuration in {path} (2 problems)"
    assert lines[1].startswith("  daemon.log_level:") and lines[2].startswith("  daemon.shutdown_grace_s:")


# ------------------------------------------------------------------ property test


def _schema_paths() -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []

    def walk(cls: type[Any], prefix: tuple[str, ...]) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                walk(typing.cast(type[Any], tp), (*prefix, f.name))
            elif typing.get_origin(tp) is tuple and dataclasses.is_dataclass(typing.get_args(tp)[0]):
                walk(typing.get_args(tp)[0], (*prefix, f.name, "0"))
            else:
                paths.append((*prefix, f.name))

    walk(config.Config, ())
    return paths


PATHS = _schema_paths()
toml_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["auto", "json", "ws", "http://127.0.0.1", "22:00-07:00", "a:b"]),
    st.lists(st.text(max_size=8), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _assign(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node: Any = doc
    for part in path[:-1]:
        if part == "0":
            if not node:
                node.append({})
            node = node[0]
            continue
        if part == "job":
            node = node.setdefault("job", [])
            continue
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return
    if isinstance(node, dict):
        node[path[-1]] = value


def _to_toml(value: Any, key: str = "") -> str:
    import json
    import math

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_to_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_to_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def _render(doc: dict[str, Any]) -> str:
    lines: list[str] = []

    def table(name: str, body: dict[str, Any], header: str) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, dict) or k in ("bogus",)}
        subs = {k: v for k, v in body.items() if isinstance(v, dict) and k not in scalars}
        lines.append(header)
        lines.extend(f"{json_key(k)} = {_to_toml(v)}" for k, v in scalars.items())
        for k, v in subs.items():
            table(f"{name}.{k}", v, f"[{name}.{json_key(k)}]")

    def json_key(k: str) -> str:
        import json

        return json.dumps(k)

    top = {k: v for k, v in doc.items() if k not in ("daemon", "job")}
    lines.extend(f"{json_key(k)} = {_to_toml(v)}" for k, v in top.items())
    if isinstance(doc.get("daemon"), dict):
        table("daemon", doc["daemon"], "[daemon]")
    for job in doc.get("job", []):
        table("job", job, "[[job]]")
    return "\n".join(lines) + "\n"


@settings(
    max_examples=200,
    derandomize=bool(os.environ.get("CI")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.lists(st.tuples(st.sampled_from([*PATHS, ("job", "0", "bogus"), ("daemon", "nope")]), toml_scalars), max_size=12)
)
def test_any_document_built_from_schema_keys_loads_or_raises_config_error(assignments: list) -> None:
    """Documents of schema keys with random values either load or raise ConfigError with messages."""
    doc: dict[str, Any] = {}
    for path, value in assignments:
        _assign(doc, path, value)
    text = _render(doc)
    try:
        configfile.loads(text)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and ": " in p for p in exc.problems)


def test_check_config_subprocess_exits_78_and_names_the_key(tmp_path: Path) -> None:
    """`syftd check-config` on a bad file: exit status 78 and the dotted key on stderr."""
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL + "[job.constraints]\nmin_battery_percent = 120\n")
    result = subprocess.run(
        [sys.executable, "-m", "syftd", "check-config", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 78
    assert "job[0].constraints.min_battery_percent: must be from 0 to 100, got 120" in result.stderr
    good = tmp_path / "good.toml"
    good.write_text(MINIMAL)
    ok = subprocess.run(
        [sys.executable, "-m", "syftd", "check-config", str(good)], capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0 and "OK (1 job)" in ok.stdout
