"""herd.toml parsing and validation: every part parses; every mistake is a SpecError with its key."""

from __future__ import annotations

import copy
import os
import re
from typing import Any

import pydantic
import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from herdsman.errors import SpecError
from herdsman.spec import parse_duration, parse_stack
from herdsman.spec.durations import format_duration

FULL = {
    "stack": {"name": "shop", "environment": "production"},
    "service": {
        "web": {
            "command": "python3 app.py --port $PORT",
            "env": {"GREETING": "hi"},
            "secrets": ["DATABASE_URL"],
            "port": 8000,
            "replicas": 3,
            "volumes": {"data": "/data"},
            "stop_grace": "15s",
            "drift": "report",
            "quarantine_keep": 2,
            "cap_add": ["NET_BIND_SERVICE"],
            "image": {
                "base": "debian:bookworm",
                "packages": ["python3", "ca-certificates"],
                "requirements": "requirements.txt",
                "python_path": "/opt/herd/python",
                "copy": [{"src": "app", "dest": "/app"}, "static"],
                "workdir": "/app",
                "user": "1000:1000",
                "entrypoint": ["/usr/bin/tini", "--"],
                "env": {"PYTHONUNBUFFERED": "1"},
                "labels": {"team": "shop"},
                "annotations": {"org.opencontainers.image.source": "https://example.invalid/shop"},
            },
            "health": {
                "type": "http",
                "path": "/healthz",
                "status": 200,
                "interval": "2s",
                "timeout": "250ms",
                "successes": 2,
                "failures": 3,
                "deadline": "1m30s",
            },
            "route": {
                "listen": "127.0.0.1:8080",
                "host": "shop.localhost",
                "drain_timeout": "30s",
                "first_byte_timeout": "5s",
            },
            "deploy": {
                "strategy": "blue-green",
                "max_surge": 2,
                "max_unavailable": 1,
                "canary_weights": [5, 50, 100],
                "canary_pause": "1m",
                "auto_rollback": True,
            },
            "scale": {"min": 2, "max": 8, "target_inflight": 10, "scale_in_window": "5m"},
            "migrate": {"command": ["python3", "migrate.py"], "timeout": "10m", "rollback_data": True},
            "limits": {"memory": "512m", "cpus": 1.5},
        },
        "worker": {
            "command": ["python3", "worker.py"],
            "health": {"type": "command", "command": ["true"]},
        },
    },
    "volume": {"data": {"description": "orders", "snapshots_keep": 7}},
    "environment": {
        "staging": {
            "driver": "docker",
            "replicas": {"web": 1},
            "env": {"MODE": "staging"},
            "registry": "127.0.0.1:5000/shop",
        }
    },
}


def parse(document: dict[str, Any]) -> Any:
    return parse_stack(tomli_w.dumps(document), file="herd.toml")


def error(document: dict[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse(document)
    return info.value


def mutate(path: str, value: Any) -> dict[str, Any]:
    document = copy.deepcopy(FULL)
    *parents, last = path.split(".")
    node = document
    for part in parents:
        node = node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return document


DELETE = object()


def test_a_full_stack_parses_into_frozen_models() -> None:
    stack = parse(FULL)
    web = stack.service["web"]
    assert web.command == ("python3", "app.py", "--port", "$PORT")
    assert web.health.deadline == 90 and web.health.timeout == 0.25
    assert [(c.src, c.dest) for c in web.image.copy_steps] == [("app", "/app"), ("static", "/app")]
    assert web.deploy.strategy == "blue-green" and web.scale.target_inflight == 10
    assert stack.environment["staging"].replicas == {"web": 1}
    assert web.route.first_byte_timeout == 5 and stack.service["worker"].route is None
    assert (
        parse(mutate("service.web.route.first_byte_timeout", DELETE)).service["web"].route.first_byte_timeout
        == 30
    )
    with pytest.raises(pydantic.ValidationError):
        web.replicas = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("path", "value", "key", "words"),
    [
        ("service.web.replica", 3, "service.web.replica", "unknown key"),
        ("service.web.health.intervall", "1s", "service.web.health.intervall", "unknown key"),
        ("stack.nme", "x", "stack.nme", "unknown key"),
        ("service.web.replicas", "3x", "service.web.replicas", ""),
        ("service.web.replicas", -1, "service.web.replicas", ""),
        ("service.web.port", "x", "service.web.port", ""),
        ("service.web.env", {"A": 1}, "service.web.env.A", ""),
        ("service.web.health.interval", "1x", "service.web.health.interval", "not a duration"),
        ("service.web.health.interval", 5, "service.web.health.interval", "duration"),
        ("service.web.health.timeout", "", "service.web.health.timeout", "duration"),
        ("service.web.image.base", "ubuntu", "service.web.image.base", "unknown base"),
        ("stack.name", "Shop", "stack.name", "not allowed"),
        ("service.web.deploy.strategy", "yolo", "service.web.deploy.strategy", ""),
        (
            "service.web.route.first_byte_timeout",
            "0s",
            "service.web.route.first_byte_timeout",
            "greater than 0",
        ),
        ("service.web.route.first_byte_timeout", 30, "service.web.route.first_byte_timeout", "duration"),
        ("service.web.min_ready", "soon", "service.web.min_ready", "not a duration"),
        ("service.web.min_ready", 1, "service.web.min_ready", "duration"),
        ("environment.staging.docker_host", "localhost:2375", "environment.staging.docker_host", ""),
    ],
)
def test_field_errors_name_the_key(path: str, value: Any, key: str, words: str) -> None:
    err = error(mutate(path, value))
    assert err.file == "herd.toml"
    assert any(p.key == key and words in p.message for p in err.problems), err.lines()
    assert "\n" not in str(err)


@pytest.mark.parametrize(
    ("document", "key", "words"),
    [
        (
            mutate("service.web.deploy", {"max_surge": 0, "max_unavailable": 0}),
            "service.web.deploy",
            "both 0",
        ),
        (mutate("volume", {}), "service.web.volumes.data", "not declared"),
        (mutate("service.web.image.packages", ["python3"]) | {}, "", ""),
        (mutate("service.web.image.base", "host"), "service.web.image.packages", "debian base"),
        (
            mutate("service.web.image.copy", [{"src": "../secrets"}]),
            "service.web.image.copy[0].src",
            "inside the project",
        ),
        (
            mutate("service.web.image.copy", [{"src": "/etc"}]),
            "service.web.image.copy[0].src",
            "inside the project",
        ),
        (mutate("service.web.route.listen", "localhost:80"), "service.web.route.listen", "not an IP"),
        (mutate("service.web.route.listen", "127.0.0.1"), "service.web.route.listen", "port"),
        (
            mutate("service.web.scale", {"min": 5, "max": 2, "target_rps": 1}),
            "service.web.scale.min",
            "above max",
        ),
        (mutate("service.worker.command", DELETE), "service.worker.command", "nothing would run"),
        (
            mutate("environment.staging.replicas", {"api": 1}),
            "environment.staging.replicas.api",
            "no service",
        ),
    ],
)
def test_cross_key_rules(document: dict[str, Any], key: str, words: str) -> None:
    if not key:
        parse(document)  # packages on a debian base are fine
        return
    err = error(document)
    assert any(p.key == key and words in p.message for p in err.problems), err.lines()
    assert all(p.hint for p in err.problems if p.key == key)


def test_two_routes_on_one_address() -> None:
    document = copy.deepcopy(FULL)
    document["service"]["api"] = {
        "command": "api",
        "port": 9000,
        "route": {"listen": "127.0.0.1:8080", "host": "SHOP.localhost"},
    }
    err = error(document)
    assert any(p.key == "service.api.route" and "already used" in p.message for p in err.problems)
    document["service"]["api"]["route"]["host"] = "api.localhost"
    parse(document)  # same address, another host: fine


def test_unknown_key_hint_lists_the_allowed_keys() -> None:
    err = error(mutate("service.web.health.intervall", "1s"))
    problem = next(p for p in err.problems if p.key == "service.web.health.intervall")
    assert "interval" in problem.hint and "deadline" in problem.hint


def test_invalid_toml_and_missing_parts() -> None:
    with pytest.raises(SpecError, match="not valid TOML"):
        parse_stack("[stack\nname = 1")
    err = error({"service": {"web": {"command": "x"}}})
    assert any(p.key == "stack" for p in err.problems)
    err = error({"stack": {"name": "x"}, "service": {}})
    assert any(p.key == "service" for p in err.problems)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("1s", 1), ("2m", 120), ("1h", 3600), ("1m30s", 90), ("1.5s", 1.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["1x", "", "s", "1.s", "ms", "1 s", "-1s", "1s2", 5, True, None])
def test_bad_durations(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@given(st.integers(min_value=0, max_value=10**7))
def test_duration_round_trip(milliseconds: int) -> None:
    seconds = milliseconds / 1000
    assert abs(parse_duration(format_duration(seconds)) - seconds) < 1e-9


# --- hypothesis: bad documents give SpecError, never anything else ------------------------------------

scalars = st.one_of(
    st.integers(-5, 70000),
    st.text(max_size=12),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(["1s", "250ms", "1x", "/data", "host", "debian:bookworm", "127.0.0.1:80", "rolling"]),
)
keys = st.one_of(
    st.sampled_from(
        [
            "stack",
            "service",
            "volume",
            "environment",
            "web",
            "name",
            "command",
            "port",
            "replicas",
            "health",
            "route",
            "deploy",
            "image",
            "volumes",
            "interval",
            "base",
            "copy",
            "listen",
            "max_surge",
        ]
    ),
    st.text(alphabet="abcdefghij_-", min_size=1, max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path] if path else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _leaves(value, (*path, key))
    return out


@settings(max_examples=250, deadline=None)
@given(st.dictionaries(keys, values, max_size=5))
def test_random_documents_only_ever_raise_spec_errors(document: dict[str, Any]) -> None:
    _only_spec_errors(document)


@settings(max_examples=250, deadline=None)
@given(st.data())
def test_mutated_documents_only_ever_raise_spec_errors(data: st.DataObject) -> None:
    document = copy.deepcopy(FULL)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _leaves(document)
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        node = document
        for part in path[:-1]:
            node = node[part]
        action = data.draw(st.sampled_from(["delete", "replace", "insert"]))
        if action == "delete":
            del node[path[-1]]
        elif action == "replace":
            node[path[-1]] = data.draw(values)
        elif isinstance(node[path[-1]], dict):
            node[path[-1]][data.draw(keys)] = data.draw(values)
    _only_spec_errors(document)


def _only_spec_errors(document: dict[str, Any]) -> None:
    try:
        text = tomli_w.dumps(document)
    except (TypeError, ValueError):
        return  # not representable as TOML at all
    try:
        parse_stack(text, file="herd.toml")
    except SpecError as err:
        assert "\n" not in str(err)
        for problem in err.problems:
            assert problem.message
            assert (
                problem.key or problem.message.startswith("not valid TOML") or "no service" in problem.message
            )


# --- issue 14: bad input fails at the edge, with its key ----------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "key", "words"),
    [
        # control characters would fail at deploy (execve refuses NUL) or split a request line
        ("service.web.env", {"A": "x\0y"}, "service.web.env.A", "U+0000 (NUL)"),
        ("service.web.env", {"A\0": "x"}, 'service.web.env."A\\x00"', "key holds"),
        ("service.web.command", ["python3", "a\0b"], "service.web.command[1]", "NUL"),
        ("service.web.command", "python3 a\x1bb", "service.web.command", "ESC"),
        ("service.web.secrets", ["DB\x01"], "service.web.secrets[0]", "U+0001"),
        ("service.web.image.env", {"A": "\x7f"}, "service.web.image.env.A", "DEL"),
        ("service.web.image.copy", [{"src": "a\tb"}], "service.web.image.copy[0].src", "tab"),
        ("service.web.image.copy", [{"src": "a", "dest": "/a\nb"}], "service.web.image.copy[0].dest", "LF"),
        ("service.web.image.workdir", "/app\r", "service.web.image.workdir", "CR"),
        ("service.web.image.labels", {"a\nb": "x"}, 'service.web.image.labels."a\\nb"', "key holds"),
        ("service.web.volumes", {"data": "/da\nta"}, "service.web.volumes.data", "LF"),
        ("service.web.route.listen", "127.0.0.1:80\n", "service.web.route.listen", "LF"),
        ("volume.data.description", "x\0", "volume.data.description", "NUL"),
        ("environment.staging.env", {"M": "\0"}, "environment.staging.env.M", "NUL"),
        ("service.web.health.path", "/x\r\nHost: evil", "service.web.health.path", "not an HTTP path"),
        ("service.web.health.path", "/a b", "service.web.health.path", "not an HTTP path"),
        ("service.web.health.path", "/é", "service.web.health.path", "not an HTTP path"),
        ("service.web.route.host", "evil\r\nX: y", "service.web.route.host", "not a host name"),
        ("service.web.route.host", "web.example.com:80", "service.web.route.host", "not a host name"),
        ("service.web.route.host", "http://web", "service.web.route.host", "not a host name"),
        # drivers are the installed ones
        ("environment.staging.driver", "kubernetes", "environment.staging.driver", "no driver 'kubernetes'"),
        ("environment.staging.driver", "nomad", "environment.staging.driver", "no driver 'nomad'"),
        # zero where it makes no sense, and absurd lengths
        ("service.web.health.timeout", "0ms", "service.web.health.timeout", "0 makes no sense"),
        ("service.web.health.interval", "0s", "service.web.health.interval", "0 makes no sense"),
        ("service.web.health.deadline", "0m", "service.web.health.deadline", "0 makes no sense"),
        ("service.web.migrate.timeout", "0s", "service.web.migrate.timeout", "0 makes no sense"),
        ("service.web.stop_grace", "721h", "service.web.stop_grace", "longer than 30 days"),
        ("service.web.route.drain_timeout", "9" * 400 + "h", "service.web.route.drain_timeout", "30 days"),
        ("stack.verify_every", "100000000m", "stack.verify_every", "longer than 30 days"),
    ],
)
def test_edge_input_is_refused_with_its_key_and_a_hint(path: str, value: Any, key: str, words: str) -> None:
    err = error(mutate(path, value))
    assert err.file == "herd.toml"
    problem = next((p for p in err.problems if p.key == key and words in p.message), None)
    assert problem is not None, err.lines()
    assert problem.hint
    assert all("\n" not in line and "\r" not in line and "\0" not in line for line in err.lines())


def test_unknown_driver_hint_lists_the_installed_ones() -> None:
    err = error(mutate("environment.staging.driver", "kubernetes"))
    assert "docker" in err.problems[0].hint and "process" in err.problems[0].hint


def test_a_canary_needs_a_route_to_be_judged_on() -> None:
    stack = parse(mutate("service.web.deploy.strategy", "canary"))
    assert stack.service["web"].deploy.strategy == "canary"
    assert stack.service["web"].canary.too_little_traffic == "fail"  # never promoted silently
    document = mutate("service.web.deploy.strategy", "canary")
    del document["service"]["web"]["route"]
    err = error(document)
    assert err.problems[0].key.endswith("service.web.deploy.strategy")
    assert "no route" in err.problems[0].message


def test_canary_checks_and_previews_parse_and_a_command_check_needs_a_command() -> None:
    checks = [{"type": "http", "path": "/ready"}, {"type": "command", "command": "python3 check.py"}]
    document = mutate("service.web.canary", {"checks": checks})
    document["preview"] = {"ttl": "30m", "max": 2}
    document["retention"] = {"prune_every": "1h"}
    stack = parse(document)
    parsed = stack.service["web"].canary.checks
    assert [c.type for c in parsed] == ["http", "command"] and parsed[1].command == ("python3", "check.py")
    assert stack.preview.ttl == 1800 and stack.preview.max == 2 and stack.retention.prune_every == 3600
    assert parse(FULL).preview.ttl == 7200 and parse(FULL).preview.max == 5  # the defaults
    err = error(mutate("service.web.canary", {"checks": [{"type": "command"}]}))
    assert err.problems[0].key.endswith("service.web.canary.checks[0].command")
    assert "needs a command" in err.problems[0].message
    assert error({**FULL, "preview": {"ttl": "0s"}}).problems[0].key.endswith("preview.ttl")


@pytest.mark.parametrize(
    ("path", "value", "check"),
    [
        ("service.web.stop_grace", "0s", lambda s: s.service["web"].stop_grace == 0),
        ("service.web.route.drain_timeout", "0ms", lambda s: s.service["web"].route.drain_timeout == 0),
        ("stack.verify_every", "0s", lambda s: s.stack.verify_every == 0),
        ("service.web.deploy.canary_pause", "0s", lambda s: s.service["web"].deploy.canary_pause == 0),
        ("service.web.scale.scale_in_window", "0s", lambda s: s.service["web"].scale.scale_in_window == 0),
        ("service.web.health.deadline", "720h", lambda s: s.service["web"].health.deadline == 30 * 86400),
        ("service.web.env", {"PEM": "a\n\tb\r\n"}, lambda s: s.service["web"].env["PEM"] == "a\n\tb\r\n"),
        ("service.web.command", ["sh", "-c", "a\nb"], lambda s: s.service["web"].command[2] == "a\nb"),
        (
            "service.web.route.host",
            "SHOP.Example.com",
            lambda s: s.service["web"].route.host == "shop.example.com",
        ),
        ("service.web.route.host", "[::1]", lambda s: s.service["web"].route.host == "[::1]"),
        (
            "service.web.health.path",
            "/healthz?full=1&x=%20",
            lambda s: s.service["web"].health.path.endswith("%20"),
        ),
        ("environment.staging.driver", "process", lambda s: s.environment["staging"].driver == "process"),
    ],
)
def test_edge_input_that_is_fine(path: str, value: Any, check: Any) -> None:
    assert check(parse(mutate(path, value)))


STACK_HEAD = '[stack]\nname = "x"\n\n[service.web]\ncommand = "app"\n'


@pytest.mark.parametrize("depth", [33, 200, 1000, 20000])
@pytest.mark.parametrize(("open_", "close"), [("[", "]"), ("{a = ", "}")])
def test_a_deeply_nested_file_is_a_spec_error_naming_the_key(depth: int, open_: str, close: str) -> None:
    text = STACK_HEAD + "env = { A = " + open_ * depth + "1" + close * depth + " }\n"
    with pytest.raises(SpecError) as info:
        parse_stack(text, file="herd.toml")
    problem = info.value.problems[0]
    assert info.value.file == "herd.toml"
    assert "nested too deeply" in problem.message and problem.hint
    assert problem.key.startswith("service.web.env")


def test_deeply_nested_tables_are_a_spec_error() -> None:
    text = STACK_HEAD + "[" + ".".join(["t"] * 40) + "]\nx = 1\n"
    with pytest.raises(SpecError, match="nested too deeply") as info:
        parse_stack(text, file="herd.toml")
    assert info.value.problems[0].key.startswith("t.t.t")


# --- hypothesis: edge input, anywhere, is a SpecError with a key, never another exception ------------


def _strings(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str]]:
    """Every string in a document: (path to it, "value" or "key")."""
    out: list[tuple[tuple[Any, ...], str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append(((*path, key), "key"))
            out += _strings(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _strings(value, (*path, index))
    elif isinstance(node, str):
        out.append((path, "value"))
    return out


def _key_of(path: tuple[Any, ...]) -> str:
    """A key path as problems name it: a key that is not a bare TOML key is quoted."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"'
            out += ("." if out else "") + name
    return out


controls = st.characters(categories=["Cc"])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_control_characters_in_any_string_are_refused_at_their_key(data: st.DataObject) -> None:
    document = copy.deepcopy(FULL)
    path, kind = data.draw(st.sampled_from(_strings(document)))
    char = data.draw(controls)
    node: Any = document
    for part in path[:-1]:
        node = node[part]
    if kind == "key":
        where = data.draw(st.integers(0, len(str(path[-1]))))
        new = str(path[-1])[:where] + char + str(path[-1])[where:]
        node[new] = node.pop(path[-1])
    else:
        text = node[path[-1]]
        where = data.draw(st.integers(0, len(text)))
        node[path[-1]] = text[:where] + char + text[where:]
    try:
        parse(document)
    except SpecError as err:
        assert err.file == "herd.toml"
        assert all(p.key and p.message for p in err.problems), err.lines()
        assert all("\n" not in line and "\0" not in line for line in err.lines())
        if kind == "value" and char not in "\t\n\r":
            assert any(p.key == _key_of(path) and p.hint for p in err.problems), err.lines()
        return
    assert kind == "value" and char in "\t\n\r", f"{char!r} at {path} was accepted"


DURATION_KEYS = [
    "service.web.stop_grace",
    "service.web.health.interval",
    "service.web.health.timeout",
    "service.web.health.deadline",
    "service.web.route.drain_timeout",
    "service.web.deploy.canary_pause",
    "service.web.scale.scale_in_window",
    "service.web.migrate.timeout",
    "stack.verify_every",
]
durations = st.one_of(
    st.sampled_from(["0s", "0ms", "0h", "0.0s", "0m0s", "720h", "721h", "30000m", "1e9s", "inf", "nan"]),
    st.builds(lambda n, u: f"{n}{u}", st.integers(0, 10**40), st.sampled_from(["ms", "s", "m", "h"])),
    st.builds(lambda n: f"{n}s", st.floats(min_value=0, allow_nan=False, allow_infinity=False)),
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(DURATION_KEYS), durations)
def test_zero_and_huge_durations_are_a_spec_error_at_their_key_or_fine(key: str, value: str) -> None:
    try:
        stack = parse(mutate(key, value))
    except SpecError as err:
        assert err.file == "herd.toml"
        # at its own key, or (a short interval) where the cross-key rule on the health timeout says so
        assert any(
            (p.key == key or "longer than its interval" in p.message) and p.hint for p in err.problems
        ), err.lines()
        return
    node: Any = stack
    for part in key.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    assert 0 <= node <= 30 * 86400


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 5000),
    st.sampled_from([("[", "]"), ("{a = ", "}"), ("[{b = ", "}]")]),
    st.sampled_from(["env = { A = ", "command = ", "x = ", "[service.web.image]\nlabels = { l = "]),
)
def test_any_nesting_depth_is_read_or_a_spec_error(depth: int, brackets: tuple[str, str], at: str) -> None:
    open_, close = brackets
    text = (
        STACK_HEAD
        + at
        + open_ * depth
        + '"v"'
        + close * depth
        + (" }" if at.endswith("{ A = ") or "{ l" in at else "")
        + "\n"
    )
    try:
        parse_stack(text, file="herd.toml")
    except SpecError as err:
        assert err.file == "herd.toml"
        for problem in err.problems:
            assert problem.message and (problem.key or problem.message.startswith("not valid TOML"))


def test_an_image_base_of_its_own_may_bring_the_command() -> None:
    """A registry, oci: or docker-archive: base may carry an entrypoint and a command (the bake
    inherits them; a deploy says "nothing to run" if it has none); scratch, host and debian cannot."""
    for base in ("registry-1.docker.io/library/redis:7", "oci:bases/app", "docker-archive:app.tar"):
        document = mutate("service.worker.command", DELETE)
        document["service"]["worker"].setdefault("image", {})["base"] = base
        parse(document)
    document = mutate("service.worker.command", DELETE)
    document["service"]["worker"].setdefault("image", {})["base"] = "debian:bookworm"
    assert any("nothing would run" in p.message for p in error(document).problems)


@pytest.mark.parametrize(("workers", "count"), [(1, 1), (3, 3), ("auto", None)])
def test_router_workers_are_a_count_or_auto(workers: Any, count: int | None) -> None:
    document = copy.deepcopy(FULL) | {"router": {"workers": workers}}
    router = parse(document).router
    assert router.workers == workers
    assert router.worker_count() == (count or len(os.sched_getaffinity(0)))


@pytest.mark.parametrize("bad", [0, 65, -1, "2", "many", True, 2.5])
def test_bad_router_workers_name_the_key_and_hint(bad: Any) -> None:
    err = error(copy.deepcopy(FULL) | {"router": {"workers": bad}})
    assert any(p.key == "router.workers" and "1 to 64" in p.message and p.hint for p in err.problems), (
        err.lines()
    )


def test_router_workers_are_the_embedded_engines() -> None:
    err = error(copy.deepcopy(FULL) | {"router": {"workers": 2, "engine": "haproxy"}})
    assert any(p.key == "router" and "embedded" in p.hint for p in err.problems), err.lines()
