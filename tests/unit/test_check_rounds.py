"""`herd check` as a new user meets it (issue 17): every problem in one round, including the
cross-reference ones, and a warning (not a failure) for a route that listens beyond loopback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from herdsman.errors import SpecError
from herdsman.spec import parse_stack

BROKEN = """
[stack]
name = "x"

[service.web]
command = "run"
replicas = -1
volumes = { data = "/data" }          # never declared

[service.web.health]
interval = "soon"
"""


def herd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "herdsman", *args], capture_output=True, text=True, timeout=60
    )


def test_an_undeclared_volume_is_reported_with_the_field_errors_in_one_round() -> None:
    with pytest.raises(SpecError) as caught:
        parse_stack(BROKEN)
    keys = [p.key for p in caught.value.problems]
    assert "service.web.replicas" in keys and "service.web.health.interval" in keys
    assert "service.web.volumes.data" in keys, keys


def test_herd_check_lists_every_problem_at_once(tmp_path: Path) -> None:
    (tmp_path / "herd.toml").write_text(BROKEN)
    result = herd("-f", str(tmp_path / "herd.toml"), "check")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    for key in ("replicas", "health.interval", "volumes.data", "port"):  # 2 fields, 2 rules
        assert sum(f"service.web.{key}:" in line for line in errors) == 1, result.stderr
    assert any("volume 'data' is used but not declared" in line for line in errors)


def test_a_problem_is_not_reported_twice_when_the_rules_run_on_the_rest() -> None:
    text = BROKEN.replace('volumes = { data = "/data" }', "volumes = { data = 5 }")
    with pytest.raises(SpecError) as caught:
        parse_stack(text)
    keys = [p.key for p in caught.value.problems]
    assert keys.count("service.web.volumes.data") == 1, keys


@pytest.mark.parametrize(
    ("listen", "what"), [("0.0.0.0:8080", "every address"), ("192.0.2.7:8080", "other machines")]
)
def test_a_route_beyond_loopback_is_a_warning_naming_file_and_key(
    tmp_path: Path, listen: str, what: str
) -> None:
    file = tmp_path / "herd.toml"
    file.write_text(
        f'[stack]\nname = "x"\n[service.web]\ncommand = "run"\nport = 8000\n'
        f'[service.web.route]\nlisten = "{listen}"\n'
    )
    result = herd("-f", str(file), "check")
    assert result.returncode == 0, result.stderr
    warning = next(line for line in result.stdout.splitlines() if line.startswith("warning:"))
    assert str(file) in warning and "service.web.route.listen" in warning and what in warning, warning


def test_a_loopback_route_gets_no_warning(tmp_path: Path) -> None:
    file = tmp_path / "herd.toml"
    file.write_text(
        '[stack]\nname = "x"\n[service.web]\ncommand = "run"\nport = 8000\n'
        '[service.web.route]\nlisten = "127.0.0.1:8080"\n'
    )
    result = herd("-f", str(file), "check")
    assert result.returncode == 0 and "warning" not in result.stdout, result.stdout
