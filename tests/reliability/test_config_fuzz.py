"""Property tests of the config loader: whatever the file holds, the answer is a ``Config`` or
a ``ConfigError`` whose every line names the file (never another exception, never silence).

Two sources of input: the shipped ``config.toml`` with random edits (a key's value replaced by
a value of another type or an odd one, a key removed, an unknown key added, at any depth),
which reaches the per-driver schemas and the cross-checks; and arbitrary text, which reaches
the TOML and UTF-8 handling.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import Config, ConfigError, load, parse

SHIPPED = Path(__file__).resolve().parents[2] / "config.toml"
BASE = tomllib.loads(SHIPPED.read_text())
PATH = Path("/nonexistent/ward/config.toml")

odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", "..", "/", "nonin", "127.0.0.1:99999", "bed-1", "_gateway", "x" * 300]),
    st.dates(),
    st.datetimes(),
    st.times(),
    st.lists(st.integers(-5, 300), max_size=4),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
)


def _paths(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [at]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*at, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*at, i))
    return found


@st.composite
def edited_configs(draw: st.DrawFn) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(raw)
        where = draw(st.sampled_from(paths[1:]))
        parent: Any = raw
        for step in where[:-1]:
            parent = parent[step]
        last = where[-1]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[last] = draw(odd_values)
        elif action == "delete":
            del parent[last]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = draw(odd_values)
        else:
            parent.append(draw(odd_values))
    return raw


def _judge(run: Any) -> None:
    try:
        config = run()
    except ConfigError as exc:
        assert exc.problems, "a ConfigError without a problem line"
        for line in exc.problems:
            assert line.startswith("config.toml") or line.startswith(str(PATH)), line
        return
    assert isinstance(config, Config)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edited_configs())
def test_edited_shipped_config_is_a_config_or_a_config_error(raw: dict[str, Any]) -> None:
    _judge(lambda: parse(raw, path=PATH))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=400), st.binary(max_size=400)))
def test_arbitrary_file_content_is_a_config_or_a_config_error(
    tmp_path_factory: Any, content: str | bytes
) -> None:
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    else:
        path.write_bytes(content)
    try:
        config = load(path)
    except ConfigError as exc:
        assert exc.problems and all(str(path) in p or "config.toml" in p for p in exc.problems)
        return
    assert isinstance(config, Config)


def test_the_base_is_valid() -> None:
    """The edits start from a config that loads: a failure above is the edit's doing."""
    assert isinstance(parse(copy.deepcopy(BASE), path=PATH), Config)
