"""Compose's variable interpolation, .env files and the value grammars of `herd import`: the edge
cases by the compose specification, and a clear HerdError (file, key path, hint) for bad input."""

from __future__ import annotations

from typing import Any

import pytest

from herdsman.errors import HerdError
from herdsman.importers import compose_values as cv
from herdsman.importers.compose import convert, load_compose
from herdsman.importers.dockerfile import recipe_from_dockerfile, registry_reference
from herdsman.importers.interpolate import Interpolation, parse_env_file

VARIABLES = {"SET": "value", "EMPTY": "", "OTHER": "other"}


def interpolate(text: str, variables: dict[str, str] | None = None) -> str:
    return Interpolation(VARIABLES if variables is None else variables, "compose.yaml").text(text, "k")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$SET", "value"),
        ("${SET}", "value"),
        ("pre-${SET}-post", "pre-value-post"),
        ("$SET$OTHER", "valueother"),
        ("${UNSET}", ""),
        ("${UNSET:-default}", "default"),
        ("${EMPTY:-default}", "default"),
        ("${SET:-default}", "value"),
        ("${UNSET-default}", "default"),
        ("${EMPTY-default}", ""),  # without ":" an empty value counts as set
        ("${SET:+other}", "other"),
        ("${EMPTY:+other}", ""),
        ("${EMPTY+other}", "other"),
        ("${UNSET+other}", ""),
        ("${EMPTY?unused}", ""),
        ("$$", "$"),
        ("$$SET", "$SET"),  # escaped: not a variable
        ("$${SET}", "${SET}"),
        ("cost: 5$", "cost: 5$"),  # a lone $ stays
        ("${UNSET:-${OTHER}}", "other"),  # a default may hold a variable
        ("${UNSET:-${ALSO_UNSET:-deep}}", "deep"),
        ("${UNSET:-a b: c}", "a b: c"),
        ("${UNSET:-}", ""),
    ],
)
def test_interpolation(text: str, expected: str) -> None:
    assert interpolate(text) == expected


def test_unset_variables_are_remembered() -> None:
    interpolation = Interpolation(VARIABLES, "compose.yaml")
    interpolation.value({"a": "${UNSET}", "b": ["$ALSO"], "c": "${DEFAULTED:-x}"})
    assert interpolation.unset == {"UNSET", "ALSO"}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("${UNSET:?give it a value}", "required variable UNSET is missing a value: give it a value"),
        ("${EMPTY:?}", "it is empty"),
        ("${UNSET?}", "it is not set"),
        ("${SET", "never closed"),
        ("${SET:-${OTHER}", "never closed"),
        ("${}", "followed by a variable name"),
        ("${1A}", "followed by a variable name"),
        ("${SET!}", "unexpected '!'"),
    ],
)
def test_interpolation_errors(text: str, words: str) -> None:
    with pytest.raises(HerdError) as caught:
        Interpolation(VARIABLES, "compose.yaml").value({"services": {"web": {"image": text}}})
    assert words in caught.value.message
    assert caught.value.file == "compose.yaml"
    assert caught.value.key == "services.web.image"
    assert caught.value.hint


def test_keys_and_extensions_are_not_interpolated() -> None:
    data = Interpolation(VARIABLES, "f").value({"${SET}": "${SET}", "x-raw": "${UNSET:?never}"})
    assert data == {"${SET}": "value", "x-raw": "${UNSET:?never}"}


def test_env_file_rules() -> None:
    text = "\n".join(
        [
            "# a comment",
            "",
            "PLAIN=value",
            "export EXPORTED=yes",
            "SINGLE='literal $HOME \\n'",
            'DOUBLE="line\\nbreak \\"quoted\\""',
            "TRAILING=value # a comment",
            "EMPTY=",
            "SPACED = around ",
        ]
    )
    assert parse_env_file(text, file=".env") == {
        "PLAIN": "value",
        "EXPORTED": "yes",
        "SINGLE": "literal $HOME \\n",
        "DOUBLE": 'line\nbreak "quoted"',
        "TRAILING": "value",
        "EMPTY": "",
        "SPACED": "around",
    }


def test_env_file_error_names_the_line() -> None:
    with pytest.raises(HerdError) as caught:
        parse_env_file("A=1\nnot a pair\n", file="web.env")
    assert "line 2" in caught.value.message and caught.value.file == "web.env" and caught.value.hint


def test_yaml_is_read_as_compose_reads_it() -> None:
    """YAML 1.2 scalars: "8080:80" is not base 60, yes/on stay strings; anchors and merge keys work."""
    text = """
x-base: &base
  environment: {FLAG: yes, SWITCH: on, REAL: true}
services:
  web:
    <<: *base
    image: nginx
    ports: [8080:80, 5000]
"""
    data, unset = load_compose(text, file="compose.yaml", variables={})
    web = data["services"]["web"]
    assert web["ports"] == ["8080:80", 5000]
    assert web["environment"] == {"FLAG": "yes", "SWITCH": "on", "REAL": True}
    assert "x-base" not in data and unset == set()


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("services: [web", "", "not valid YAML (line 1"),
        ("- a list", "", "a mapping with a `services` key"),
        ("name: x", "services", "declares no service"),
        ("services:\n  web: nginx", "services.web", "a service is a mapping"),
        ("services:\n  web:\n    image: ${TAG:?tag the release}", "services.web.image", "tag the release"),
    ],
)
def test_malformed_compose_files(text: str, key: str, words: str) -> None:
    with pytest.raises(HerdError) as caught:
        load_compose(text, file="compose.yaml", variables={})
    assert words in caught.value.message and caught.value.key == key
    assert caught.value.file == "compose.yaml" and caught.value.hint


def imported(services: dict[str, Any], files: dict[str, str] | None = None) -> str:
    result = convert({"services": services}, file="compose.yaml", stack_name="s", read=(files or {}).get)
    return result.text


@pytest.mark.parametrize(
    ("service", "key", "words"),
    [
        ({"build": "./api"}, "services.web.build", "no api/Dockerfile"),
        ({"build": "https://github.com/x/y.git"}, "services.web.build.context", "remote"),
        ({"image": "a", "ports": ["80:http"]}, "services.web.ports[0]", "not a port mapping"),
        ({"image": "a", "ports": ["8000-8001:80"]}, "services.web.ports[0]", "ranges"),
        ({"image": "a", "deploy": {"resources": {"limits": {"memory": "lots"}}}}, "", "not a memory size"),
        ({"image": "a", "healthcheck": {"test": ["RUN", "x"]}}, "services.web.healthcheck.test", "CMD"),
        ({"image": "a", "healthcheck": {"test": ["CMD"]}}, "services.web.healthcheck.test", "no command"),
        ({"image": "a", "healthcheck": {"test": "x", "interval": "1d"}}, "", "not a duration"),
        ({"image": "a", "volumes": ["data:relative"]}, "services.web.volumes[0]", "absolute"),
        ({"image": "a", "env_file": "missing.env"}, "services.web.env_file[0]", "does not exist"),
        ({"command": "x"}, "services.web", "neither image nor build"),
        ({"image": "a", "command": "unbalanced 'quote"}, "services.web.command", "cannot split"),
    ],
)
def test_bad_services(service: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(HerdError) as caught:
        imported({"web": service})
    assert words in caught.value.message, caught.value.message
    assert caught.value.key.startswith(key or "services.web") and caught.value.file == "compose.yaml"


def test_two_names_that_meet_after_renaming() -> None:
    with pytest.raises(HerdError, match="would both be named 'my-api'"):
        imported({"my_api": {"image": "a"}, "my.api": {"image": "a"}})


@pytest.mark.parametrize(
    ("test", "kind", "command"),
    [
        (["CMD", "pg_isready", "-U", "app"], "command", ["pg_isready", "-U", "app"]),
        (["CMD-SHELL", "pg_isready || exit 1"], "command", ["/bin/sh", "-c", "pg_isready || exit 1"]),
        ("redis-cli ping", "command", ["/bin/sh", "-c", "redis-cli ping"]),
        (["CMD", "curl", "-f", "http://localhost:8000/up"], "http", []),
        ("curl -fsS http://127.0.0.1:8000/up || exit 1", "http", []),
        (["CMD-SHELL", "wget -qO- http://localhost:8000/up"], "http", []),
        (
            ["CMD", "curl", "-f", "http://localhost:9999/up"],
            "command",
            ["curl", "-f", "http://localhost:9999/up"],
        ),
    ],
)
def test_the_three_health_check_forms(test: object, kind: str, command: list[str]) -> None:
    probe = cv.probe(test, 8000, file="f", key="k")
    assert probe is not None and probe.type == kind and probe.command == command
    if kind == "http":
        assert probe.path == "/up"
    assert cv.probe(["NONE"], 8000, file="f", key="k") is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (536870912, "512m"),
        ("512M", "512m"),
        ("1G", "1g"),
        ("1.5g", "1536m"),
        ("256mb", "256m"),
        ("1000", "1000"),
    ],
)
def test_memory_sizes(value: object, expected: str) -> None:
    assert cv.memory(value, file="f", key="k") == expected


@pytest.mark.parametrize(
    ("image", "reference"),
    [
        ("redis", "registry-1.docker.io/library/redis:latest"),
        ("redis:7", "registry-1.docker.io/library/redis:7"),
        ("grafana/grafana:11", "registry-1.docker.io/grafana/grafana:11"),
        ("docker.io/library/redis:7", "registry-1.docker.io/library/redis:7"),
        ("ghcr.io/o/app:1.2", "ghcr.io/o/app:1.2"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("redis@sha256:" + "a" * 64, "registry-1.docker.io/library/redis@sha256:" + "a" * 64),
    ],
)
def test_registry_references(image: str, reference: str) -> None:
    assert registry_reference(image) == reference


def test_dockerfile_target_stage_and_args() -> None:
    text = """
ARG SUITE=bullseye
FROM debian:${SUITE} AS base
RUN apt-get update && apt-get install -y curl
COPY app /app
FROM base AS test
RUN make test
FROM scratch AS final
COPY bin/ /bin/
"""
    recipe = recipe_from_dockerfile(
        text, context="svc", where="w", args={"SUITE": "12"}, target="base", exists=bool
    )
    assert recipe.image["base"] == "debian:bookworm"
    assert recipe.image["packages"] == ["curl"]
    assert recipe.image["copy"] == [{"src": "svc/app", "dest": "/app"}]
    assert recipe.gaps == []
    last = recipe_from_dockerfile(text, context="", where="w", args={}, target=None, exists=bool)
    assert last.image["base"] == "scratch" and last.image["copy"] == [{"src": "bin", "dest": "/bin/"}]


def test_env_files_are_interpolated_and_environment_wins_over_them() -> None:
    files = {"web.env": "GREETING=hello ${WHO:-world}\nLEVEL=debug\n"}
    service = {"image": "a", "env_file": ["web.env"], "environment": {"LEVEL": "info"}}
    result = convert(
        {"services": {"web": service}},
        file="compose.yaml",
        stack_name="s",
        read=files.get,
        variables={"WHO": "herd"},
    )
    assert 'GREETING = "hello herd"' in result.text and 'LEVEL = "info"' in result.text


def test_a_build_with_nothing_to_run_is_said() -> None:
    files = {"Dockerfile": "FROM debian:bookworm\nCOPY . /app\n"}
    result = convert({"services": {"web": {"build": "."}}}, file="c", stack_name="s", read=files.get)
    assert any(g.key == "services.web.command" and "set command" in g.why for g in result.gaps)
