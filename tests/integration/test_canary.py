"""`strategy = "canary"` on real processes behind the real router (issue 16): a release that errs
or is slow is aborted on its verdict, a good one is promoted, too little traffic holds and then
does what `too_little_traffic` says; the failing share is bounded by the canary's weight."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need_command
from tests.helpers import Load, free_port, hello_copy, herd, instances, stop_project, wait_for, write_project

APP = """
import os, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAIL_EVERY = int(os.environ.get("FAIL_EVERY", "0"))
DELAY = float(os.environ.get("DELAY_MS", "0")) / 1000
RELEASE = os.environ.get("HERD_RELEASE", "?")
lock, count = threading.Lock(), [0]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body are two writes: no 40 ms delayed-ACK stall

    def do_GET(self):
        if self.path == "/healthz":
            return self.reply(200, b"ok\\n")
        time.sleep(DELAY)
        with lock:
            count[0] += 1
            n = count[0]
        if FAIL_EVERY and n % FAIL_EVERY == 0:
            return self.reply(500, f"release {RELEASE} failed\\n".encode())
        self.reply(200, f"release {RELEASE}\\n".encode())

    def reply(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Herd-Release", RELEASE)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""

TOML = """
[stack]
name = "canary-{name}"

[service.web]
command = ["python3", "app.py"]
port = 8000
replicas = 2
env = {{ FAIL_EVERY = "{fail_every}", DELAY_MS = "{delay_ms}", NOTE = "{note}" }}

[service.web.image]
base = "host"
copy = [{{ src = "app", dest = "/app" }}]
workdir = "/app"

[service.web.health]
type = "http"
path = "/healthz"
interval = "100ms"
timeout = "100ms"

[service.web.route]
listen = "127.0.0.1:{port}"

[service.web.deploy]
strategy = "canary"
canary_weights = [20, 100]
canary_pause = "4s"

[service.web.canary]
min_requests = 30
max_wait = "{max_wait}"
too_little_traffic = "{too_little}"
on_fail = "{on_fail}"

[router]
engine = "{engine}"
"""


def project(
    root: Path,
    *,
    note: str = "",
    fail_every: int = 0,
    delay_ms: int = 1,
    max_wait: str = "20s",
    too_little: str = "fail",
    engine: str = "embedded",
    on_fail: str = "stop",
) -> int:
    port = (
        free_port()
        if not (root / "herd.toml").exists()
        else int(
            re.search(r"127\.0\.0\.1:(\d+)", (root / "herd.toml").read_text()).group(1)  # type: ignore[union-attr]
        )
    )
    toml = TOML.format(
        name=root.parent.name[-12:].lower().replace("_", "-"),
        fail_every=fail_every,
        delay_ms=delay_ms,
        port=port,
        max_wait=max_wait,
        too_little=too_little,
        note=note,
        engine=engine,
        on_fail=on_fail,
    )
    write_project(root, toml, {"app/app.py": APP})
    return port


def canary_events(root: Path) -> list[dict[str, str]]:
    out = herd(root, "events", "--kind", "canary", "-n", "100").stdout
    return [{"line": line} for line in out.splitlines() if "canary at" in line]


def releases_running(root: Path) -> set[str]:
    return {i["release"] for i in instances(root) if i["state"] == "running"}


@pytest.mark.parametrize("engine", ["embedded", "haproxy"])
def test_a_release_failing_one_request_in_five_is_aborted_within_the_canary_share(
    tmp_path: Path, engine: str
) -> None:
    if engine == "haproxy":
        need_command("haproxy")
    root = tmp_path / "app"
    port = project(root, engine=engine)
    try:
        herd(root, "deploy")  # release 1: no canary (nothing to compare with)
        project(root, fail_every=5, engine=engine)
        with Load(f"http://127.0.0.1:{port}/", workers=4) as load:
            result = herd(root, "deploy", check=False, timeout=180)
        said = result.stdout + result.stderr
        assert result.returncode != 0, (
            said + herd(root, "events", "-n", "30").stdout + herd(root, "ps").stdout
        )
        assert "the canary of web failed at 20% of requests: error rate" in said
        assert releases_running(root) == {"1"}  # the baseline serves everything again
        assert load.failures, "the bad canary was never sent a request"
        assert all("release 2 failed" in f for f in load.failures), load.failures[:5]
        share = len(load.failures) / len(load.served)
        assert share <= 0.2, f"{share:.1%} of requests failed: more than the canary's 20% share"
        lines = [e["line"] for e in canary_events(root)]
        assert any("canary at 20%: fail: error rate" in line for line in lines), lines
        status = herd(root, "releases").stdout
        assert re.search(r"^2 .* failed: the canary of web failed", status, re.M), status
    finally:
        stop_project(root)


def test_a_release_twenty_times_slower_is_aborted_on_latency(tmp_path: Path) -> None:
    root = tmp_path / "app"
    port = project(root, delay_ms=2)
    try:
        herd(root, "deploy")
        project(root, delay_ms=40)
        with Load(f"http://127.0.0.1:{port}/", workers=4) as load:
            result = herd(root, "deploy", check=False, timeout=180)
        said = result.stdout + result.stderr
        assert result.returncode != 0 and "latency" in said and "Mann-Whitney" in said, said
        assert load.failures == []  # slow, not failing: no request was lost
        assert releases_running(root) == {"1"}
    finally:
        stop_project(root)


def test_too_little_traffic_holds_then_does_what_it_is_told(tmp_path: Path) -> None:
    root = tmp_path / "app"
    project(root, max_wait="2s")
    try:
        herd(root, "deploy")
        project(root, delay_ms=2, max_wait="2s", too_little="fail")
        result = herd(root, "deploy", check=False, timeout=120)  # no load at all
        said = result.stdout + result.stderr
        assert (
            result.returncode != 0 and "too little traffic" in said and "too_little_traffic = 'fail'" in said
        )
        assert releases_running(root) == {"1"}
        project(root, delay_ms=3, max_wait="2s", too_little="pass")
        out = herd(root, "deploy", timeout=120).stdout
        assert "too_little_traffic = 'pass'" in out
        assert releases_running(root) == {"3"}
    finally:
        stop_project(root)


def test_the_pool_gives_the_canary_exactly_its_weight(tmp_path: Path) -> None:
    """Weighted round robin is exact: with one canary and two baseline instances at 20%, every
    fifth request goes to the canary (checked on the router's own counters)."""
    from herdsman.deploy.plan import canary_weights

    assert canary_weights(1, 2, 20) == (1, 2)  # 1 / (1 + 2*2) = 20%
    assert canary_weights(2, 3, 5) == (3, 38)  # 2*3 / (2*3 + 3*38) = 5%
    mine, theirs = canary_weights(3, 7, 33)
    assert json.dumps(3 * mine / (3 * mine + 7 * theirs))[:4] == "0.33"


def _judging(root: Path) -> str | None:
    out = herd(root, "canary", "status").stdout
    return out if "judging" in out and " req," in out else None


def _deploy_in_background(root: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "herdsman", "-f", str(root / "herd.toml"), "deploy"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_status_shows_both_sides_live_and_a_person_can_abort_or_promote(tmp_path: Path) -> None:
    root = tmp_path / "app"
    port = project(root)
    toml = root / "herd.toml"
    try:
        herd(root, "deploy")
        assert "no canary is being judged" in herd(root, "canary", "abort", check=False).stderr
        project(root, delay_ms=2)
        toml.write_text(toml.read_text().replace('canary_pause = "4s"', 'canary_pause = "10m"'))
        with Load(f"http://127.0.0.1:{port}/", workers=2) as load:
            deploying = _deploy_in_background(root)
            status = wait_for(lambda: _judging(root), seconds=60)
            assert re.search(r"web\s+2\s+20%\s+judging", status), status
            wait_for(
                lambda: re.search(r"judging.*?([1-9]\d*) req", herd(root, "canary", "status").stdout), 30
            )
            assert "asked web to abort" in herd(root, "canary", "abort", "web").stdout
            out, _ = deploying.communicate(timeout=60)
            assert deploying.returncode != 0 and "aborted by hand (herd canary abort)" in out, out
            assert releases_running(root) == {"1"}
            assert "failed" in herd(root, "canary", "status").stdout

            project(root, delay_ms=3)
            toml.write_text(toml.read_text().replace('canary_pause = "4s"', 'canary_pause = "10m"'))
            deploying = _deploy_in_background(root)
            wait_for(lambda: "judging" in herd(root, "canary", "status").stdout, seconds=60)
            assert "asked web to promote" in herd(root, "canary", "promote").stdout
            out, _ = deploying.communicate(timeout=60)
            assert deploying.returncode == 0 and "promoted by hand" in out, out
        assert load.failures == []
        assert releases_running(root) == {"3"}
    finally:
        stop_project(root)


FAILING = """
    def do_GET(self) -> None:
        every = int(os.environ.get("FAIL_EVERY", "0"))
        if self.path == "/" and every and next(CALLS) % every == 0:
            return self.reply(500, "text/plain", f"release {RELEASE} failed\\n")
        return self.serve()

    def serve(self) -> None:
"""


@pytest.mark.docker
def test_a_failing_canary_is_aborted_on_docker_too(tmp_path: Path, debian_hello: Path) -> None:
    root = tmp_path / "hello"
    port = hello_copy(root, template=debian_hello)
    app = root / "app" / "app.py"
    text = app.read_text().replace("import contextlib\n", "import contextlib\nimport itertools\n", 1)
    text = text.replace("\nclass Handler(", "\nCALLS = itertools.count(1)\n\n\nclass Handler(", 1)
    app.write_text(text.replace("\n    def do_GET(self) -> None:\n", FAILING, 1))
    toml = root / "herd.toml"
    canary = '[service.web.deploy]\nstrategy = "canary"\ncanary_weights = [20, 100]\ncanary_pause = "4s"\n'
    canary += '\n[service.web.canary]\nmin_requests = 30\nmax_wait = "20s"\n'
    text = re.sub(r"\[service\.web\.deploy\]\n(.+\n)+?(?=\n|\[)", canary, toml.read_text())
    toml.write_text(text.replace('DATA_DIR = "/data" }', 'DATA_DIR = "/data", FAIL_EVERY = "0" }'))
    assert 'strategy = "canary"' in toml.read_text() and 'driver = "docker"' in toml.read_text()
    try:
        herd(root, "deploy", timeout=300)
        toml.write_text(toml.read_text().replace('FAIL_EVERY = "0"', 'FAIL_EVERY = "5"'))
        with Load(f"http://127.0.0.1:{port}/", workers=4) as load:
            result = herd(root, "deploy", check=False, timeout=300)
        said = result.stdout + result.stderr
        assert result.returncode != 0 and "the canary of web failed at 20% of requests: error rate" in said, (
            said
        )
        assert releases_running(root) == {"1"}
        assert load.failures and all("release 2 failed" in f for f in load.failures), load.failures[:5]
        assert len(load.failures) / len(load.served) <= 0.2
        # judged against a fresh baseline (a new container of release 1), gone with the canary
        assert "(baseline: fresh)" in said, said
        events = herd(root, "events", "--kind", "instance", "-n", "200").stdout
        fresh = set(re.findall(r"started (web-1-[0-9a-f]{4}b\d+)", events))
        assert len(fresh) == 1 and all(f"retired {i}" in events for i in fresh), events
        assert not fresh & {i["id"] for i in instances(root)}
    finally:
        stop_project(root)


@pytest.mark.docker
def test_a_custom_command_check_runs_inside_a_docker_canary(tmp_path: Path, debian_hello: Path) -> None:
    """A `type = "command"` canary check runs inside the canary's container (docker exec), with its
    environment: the release whose NOTE says bad fails on it, with the command's output."""
    root = tmp_path / "hello"
    port = hello_copy(root, template=debian_hello)
    toml = root / "herd.toml"
    canary = '[service.web.deploy]\nstrategy = "canary"\ncanary_weights = [20, 100]\ncanary_pause = "3s"\n'
    canary += '\n[service.web.canary]\nmin_requests = 10\nmax_wait = "20s"\n' + CHECKS
    text = re.sub(r"\[service\.web\.deploy\]\n(.+\n)+?(?=\n|\[)", canary, toml.read_text())
    toml.write_text(text.replace('DATA_DIR = "/data" }', 'DATA_DIR = "/data", NOTE = "good" }'))
    assert 'type = "command"' in toml.read_text() and 'driver = "docker"' in toml.read_text()
    try:
        herd(root, "deploy", timeout=300)
        toml.write_text(toml.read_text().replace('NOTE = "good"', 'NOTE = "bad"'))
        with Load(f"http://127.0.0.1:{port}/", workers=4) as load:
            result = herd(root, "deploy", check=False, timeout=300)
        said = result.stdout + result.stderr
        assert result.returncode != 0, said
        assert re.search(r"check 2 \(python3 -c .*\) failed on web-2-\w+: exit 1: no orders table", said), (
            said
        )
        assert load.failures == [], load.failures[:5]  # a check failed, no request did
        assert releases_running(root) == {"1"}
    finally:
        stop_project(root)


def test_a_canary_survives_its_agent_killed_mid_verdict(tmp_path: Path) -> None:
    """Through the agent: killed with SIGKILL while the canary is judged, a new agent plans again
    from what runs (the canary instance is kept, the canary starts over at its first weight) and
    promotes the good release; the router never stops serving."""
    import os
    import signal

    root = tmp_path / "app"
    port = project(root)
    toml = root / "herd.toml"
    try:
        herd(root, "up", "-d", timeout=120)
        project(root, note="release 2")
        toml.write_text(toml.read_text().replace('canary_pause = "4s"', 'canary_pause = "6s"'))
        with Load(f"http://127.0.0.1:{port}/", workers=2) as load:
            deploying = _deploy_in_background(root)
            wait_for(lambda: _judging(root), seconds=60)
            agent = int((root / ".herd" / "run" / "agent-production.pid").read_text())
            os.kill(agent, signal.SIGKILL)
            out, _ = deploying.communicate(timeout=60)
            assert deploying.returncode != 0, out  # its agent died under it
            herd(root, "up", "-d", "--no-deploy", timeout=120)  # resumes the rollout it left
            wait_for(lambda: releases_running(root) == {"2"} and len(instances(root)) == 2, seconds=90)
        assert load.failures == []
        lines = [e["line"] for e in canary_events(root)]
        assert any("canary at 20%: pass" in line for line in lines), lines
        assert "release 2 deployed" in herd(root, "events", "--kind", "rollout").stdout
    finally:
        stop_project(root)


def test_a_failed_canary_can_be_kept_for_a_post_mortem(tmp_path: Path) -> None:
    root = tmp_path / "app"
    port = project(root, on_fail="quarantine")
    try:
        herd(root, "deploy")
        assert "no quarantined instance" in herd(root, "quarantine").stdout
        project(root, fail_every=3, on_fail="quarantine")
        with Load(f"http://127.0.0.1:{port}/", workers=4):
            result = herd(root, "deploy", check=False, timeout=180)
        assert result.returncode != 0 and "kept: herd quarantine" in result.stderr, result.stderr
        assert releases_running(root) == {"1"}
        kept = herd(root, "quarantine").stdout
        canary = re.search(r"(web-2-\w+)", kept)
        assert canary is not None and "failed canary of release 2" in kept, kept
        record = json.loads(herd(root, "inspect", canary.group(1), "--json").stdout)
        assert record["release"] == 2 and record["reason"].startswith("failed canary of release 2")
        assert (root / ".herd" / "quarantine" / canary.group(1) / "log").is_file()
    finally:
        stop_project(root)


CHECKS = """
[[service.web.canary.checks]]
type = "http"
path = "/healthz"

[[service.web.canary.checks]]
type = "command"
command = ["python3", "-c", "import os, sys; os.environ['NOTE'] == 'bad' and sys.exit('no orders table')"]
timeout = "10s"
"""


def test_custom_canary_checks_fail_a_canary_with_their_output_or_let_it_pass(tmp_path: Path) -> None:
    """`[[service.NAME.canary.checks]]`: an HTTP check against each canary instance and a command
    run inside it, at each step; a failing one fails the canary, its output the reason."""
    root = tmp_path / "app"
    port = project(root)
    toml = root / "herd.toml"
    try:
        herd(root, "deploy")  # release 1: no canary
        project(root, note="bad")
        toml.write_text(toml.read_text() + CHECKS)
        with Load(f"http://127.0.0.1:{port}/", workers=4) as load:
            failed = herd(root, "deploy", check=False, timeout=180)
        said = failed.stdout + failed.stderr
        assert failed.returncode != 0, said
        assert re.search(
            r"the canary of web failed at 20% of requests: check 2 \(python3 -c .*\) failed on "
            r"web-2-\w+: exit 1: no orders table",
            said,
        ), said
        assert load.failures == []  # a check failed, no request did
        assert releases_running(root) == {"1"}
        assert any("canary at 20%: fail: check 2" in e["line"] for e in canary_events(root))
        project(root, note="good")
        toml.write_text(toml.read_text() + CHECKS)
        with Load(f"http://127.0.0.1:{port}/", workers=4) as load:
            out = herd(root, "deploy", timeout=180).stdout
        assert "canary check 1 (http /healthz) passed" in out and "canary check 2" in out, out
        assert "2 check(s) passed" in out
        assert load.failures == []
        assert releases_running(root) == {"3"}
    finally:
        stop_project(root)
