"""The `herd` command as a user meets it: help that teaches, one-line errors, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from herdsman.spec import parse_stack
from herdsman.spec.starter import starter


def herd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "herdsman", *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


def test_help_lists_the_commands() -> None:
    result = herd("--help")
    assert result.returncode == 0
    for command in ("init", "check", "bake", "images", "image"):
        assert command in result.stdout
    bake_help = herd("bake", "--help").stdout
    assert "--refresh" in bake_help and "herd.lock" in bake_help


def test_starter_parses_for_any_reasonable_name() -> None:
    for name in ("app", "my-shop", "x1"):
        stack = parse_stack(starter(name))
        assert stack.name == name
        assert stack.service["web"].route is not None


def test_init_then_check(tmp_path: Path) -> None:
    project = tmp_path / "My Shop"
    result = herd("init", str(project))
    assert result.returncode == 0, result.stderr
    assert (project / "herd.toml").exists()
    assert 'name = "my-shop"' in (project / "herd.toml").read_text()
    again = herd("init", str(project))
    assert again.returncode == 1 and "already exists" in again.stderr and "--force" in again.stderr
    check = herd("check", cwd=project)
    assert check.returncode == 0, check.stderr
    assert "ok" in check.stdout


def test_check_reports_every_problem_one_line_each_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "herd.toml").write_text(
        '[stack]\nname = "x"\n[service.web]\ncommand = "run"\nreplicas = -1\n'
        '[service.web.health]\ninterval = "soon"\n'
    )
    result = herd("-f", str(tmp_path / "herd.toml"), "check")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert any("service.web.replicas" in line for line in lines)
    assert any("service.web.health.interval" in line for line in lines)
    assert all(str(tmp_path / "herd.toml") in line for line in lines)
    assert "Traceback" not in result.stderr


def test_single_error_has_a_hint_and_verbose_shows_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "herd.toml").write_text('[stack]\nname = "x"\n[service.web]\ncommand = "run"\nreplica = 3\n')
    result = herd("-f", str(tmp_path / "herd.toml"), "check")
    assert result.returncode == 2
    assert "service.web.replica" in result.stderr and "unknown key" in result.stderr
    assert "hint:" in result.stderr and "replicas" in result.stderr
    verbose = herd("-v", "-f", str(tmp_path / "herd.toml"), "check")
    assert "Traceback" in verbose.stderr


def test_no_herd_toml_says_what_to_do(tmp_path: Path) -> None:
    result = herd("check", cwd=tmp_path)
    assert result.returncode == 2
    assert "herd init" in result.stderr


def test_check_refuses_issue_14_edge_input_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    """Each of these passed `herd check` (or crashed it with exit 70) and failed later, at deploy."""
    head = '[stack]\nname = "x"\n[service.web]\ncommand = "run"\nport = 8000\n'
    cases = {
        "nested": (
            head + "env = { A = " + "[" * 5000 + "]" * 5000 + " }\n",
            "service.web.env",
            "nested too deeply",
        ),
        "nul": (head + 'env = { A = "x\\u0000y" }\n', "service.web.env.A", "U+0000 (NUL)"),
        "driver": (
            head + '[environment.prod]\ndriver = "kubernetes"\n',
            "environment.prod.driver",
            "kubernetes",
        ),
        "zero": (
            head + '[service.web.health]\ntimeout = "0ms"\n',
            "service.web.health.timeout",
            "0 makes no",
        ),
        "huge": (head + 'stop_grace = "100000h"\n', "service.web.stop_grace", "longer than 30 days"),
        "crlf": (
            head + '[service.web.health]\npath = "/h\\r\\nX: y"\n',
            "service.web.health.path",
            "HTTP path",
        ),
        "host": (head + '[service.web.route]\nhost = "a\\u0000b"\n', "service.web.route.host", "NUL"),
        "canary": (
            head + '[service.web.deploy]\nstrategy = "canary"\n',
            "service.web.deploy.strategy",
            "canary",
        ),
    }
    for name, (text, key, words) in cases.items():
        (tmp_path / "herd.toml").write_text(text)
        result = herd("-f", str(tmp_path / "herd.toml"), "check")
        assert result.returncode == 2, (name, result.stderr)
        first = result.stderr.splitlines()[0]
        assert first.startswith(f"error: {tmp_path / 'herd.toml'}: {key}") and words in first, (name, first)
        assert "hint:" in result.stderr and "Traceback" not in result.stderr, name


def test_logs_of_a_service_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    """Not an empty success: the user misspelt a name (issue 17)."""
    assert herd("init", str(tmp_path)).returncode == 0
    result = herd("-f", str(tmp_path / "herd.toml"), "logs", "wbe")
    assert result.returncode == 1
    assert "no service or instance wbe" in result.stderr and "services: web" in result.stderr


def test_help_loads_no_http_client_nor_web_framework() -> None:
    """`herd --help` and `herd ps --help` answer at once: the agent's client (httpx), its server
    (FastAPI, uvicorn), the dashboard (jinja2), the models (pydantic) and rich (help is click's
    text; `cli.out` loads rich when a command prints with it) load only for the commands that use
    them."""
    for args in (["--help"], ["ps", "--help"], ["deploy", "--help"]):
        code = (
            "import runpy, sys\n"
            f"sys.argv = ['herd', *{args!r}]\n"
            "try:\n    runpy.run_module('herdsman', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "heavy = {'httpx', 'fastapi', 'uvicorn', 'jinja2', 'docker', 'pydantic', 'rich'}\n"
            "heavy &= set(sys.modules)\n"
            "print('HEAVY', sorted(heavy))\n"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert "HEAVY []" in result.stdout, (args, result.stdout[-300:], result.stderr[-300:])
