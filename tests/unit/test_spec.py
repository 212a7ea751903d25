"""herd.toml parsing and validation: every part parses; every mistake is a SpecError with its key."""

from __future__ import annotations

import copy
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
            "route": {"listen": "127.0.0.1:8080", "host": "shop.localhost", "drain_timeout": "30s"},
            "deploy": {
                "strategy": "canary",
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
    "environment": {"staging": {"driver": "docker", "replicas": {"web": 1}, "env": {"MODE": "staging"}}},
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
    assert web.deploy.strategy == "canary" and web.scale.target_inflight == 10
    assert stack.environment["staging"].replicas == {"web": 1}
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
        ("service.web.min_ready", "soon", "service.web.min_ready", "not a duration"),
        ("service.web.min_ready", 1, "service.web.min_ready", "duration"),
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
