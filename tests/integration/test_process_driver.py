"""The process driver on real processes: sandboxed and plain, labels, ports, volumes, stop, adoption."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from herdsman.drivers.base import InstanceSpec, VolumeMount
from herdsman.drivers.process import ProcessDriver
from herdsman.errors import DriverError
from herdsman.health import probe
from herdsman.image.bake import bake, image_store
from herdsman.spec import load_project
from herdsman.spec.models import HealthCheck
from tests.conftest import need_command
from tests.helpers import HELLO


@pytest.fixture
def hello(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    shutil.copytree(HELLO, tmp_path / "hello", ignore=shutil.ignore_patterns(".herd", "__pycache__"))
    project = load_project(tmp_path / "hello" / "herd.toml")
    digest = bake(project)[0].image.digest
    home = tmp_path / "hello" / ".herd"
    yield home, digest
    driver = ProcessDriver(home, image_store(project))  # no orphan outlives a failing test
    for instance in driver.list_now():
        asyncio.run(driver.stop(instance.id, 1))
    driver.stamping.stop()  # the home's log stamper, as `herd down` does


def _spec(
    home: Path, digest: str, instance: str, volume: Path, argv: tuple[str, ...] = ("python3", "app.py")
) -> InstanceSpec:
    labels = {
        "herd.stack": "hello",
        "herd.env": "production",
        "herd.service": "web",
        "herd.release": "1",
        "herd.instance": instance,
        "herd.image": digest,
    }
    return InstanceSpec(
        id=instance,
        image=digest,
        labels=labels,
        argv=argv,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "DATA_DIR": "/data", "HERD_INSTANCE": instance},
        workdir="/app",
        volumes=(VolumeMount("counter", volume, "/data"),),
        stop_grace=5,
    )


async def _wait_healthy(port: int) -> None:
    for _ in range(100):
        if (await probe(HealthCheck(), "127.0.0.1", port)).ok:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("instance never became healthy")


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_instances_serve_share_a_volume_and_stop(hello: tuple[Path, str], sandbox: str) -> None:
    if sandbox == "bwrap":
        need_command("bwrap")
    home, digest = hello
    volume = home / "volumes" / "counter"

    async def scenario() -> None:
        driver = ProcessDriver(home, image_store(load_project(home.parent / "herd.toml")), sandbox=sandbox)
        one = await driver.start(_spec(home, digest, "web-1", volume))
        two = await driver.start(_spec(home, digest, "web-2", volume))
        assert one.port and two.port and one.port != two.port
        await _wait_healthy(one.port)
        await _wait_healthy(two.port)
        async with httpx.AsyncClient() as client:
            first = await client.get(f"http://{one.address}/")
            second = await client.get(f"http://{two.address}/")
        assert "visit number <b id=visits>1</b>" in first.text
        assert "visit number <b id=visits>2</b>" in second.text, "both instances see one volume"
        assert json.loads((volume / "visits").read_text())["visits"] == 2
        states = await driver.list({"herd.service": "web"})
        assert [s.id for s in states] == ["web-1", "web-2"]
        assert all(s.state == "running" and s.labels["herd.image"] == digest for s in states)
        await driver.stop("web-1", 5)
        await driver.stop("web-1", 5)  # idempotent
        assert [s.id for s in await driver.list()] == ["web-2"]
        log = driver.log_file("web-2")
        await driver.stop("web-2", 5)
        assert await driver.list() == []
        assert log is not None and "hello listening" in log.read_text(), "logs outlive the instance"

    asyncio.run(scenario())


def test_sandbox_root_is_read_only_and_tmp_private(hello: tuple[Path, str]) -> None:
    need_command("bwrap")
    home, digest = hello
    volume = home / "volumes" / "counter"
    script = (
        "import os\n"
        "for path in ('/app/x', '/etc/herd-test', '/usr/herd-test'):\n"
        "    try:\n        open(path, 'w')\n        print('WROTE', path)\n"
        "    except OSError as e:\n        print('refused', path, e.errno)\n"
        "open('/tmp/ok', 'w').write('1'); open('/data/ok', 'w').write('1'); print('done')\n"
    )

    async def scenario() -> None:
        driver = ProcessDriver(home, image_store(load_project(home.parent / "herd.toml")), sandbox="bwrap")
        spec = _spec(home, digest, "probe-1", volume, argv=("python3", "-c", script))
        await driver.start(spec)
        for _ in range(100):
            state = await driver.inspect("probe-1")
            if state is None or state.state == "exited":
                break
            await asyncio.sleep(0.05)
        log = driver.log_file("probe-1")
        assert state is not None and state.exit_code == 0
        await driver.stop("probe-1", 1)
        assert log is not None
        text = log.read_text()
        assert "WROTE" not in text and text.count("refused") == 3 and "done" in text
        assert (volume / "ok").exists()
        assert not Path("/tmp/ok").exists() or Path("/tmp/ok").stat().st_mtime < time.time() - 60

    asyncio.run(scenario())


def test_an_exit_code_is_known_while_other_threads_inspect_the_same_instance(hello: tuple[Path, str]) -> None:
    """`Popen.poll` answers None while another thread waits for the same child: an instance that
    ended must still report its exit code (a migration's "exited with code None" was this race
    between the deploy's inspections and the agent's listings in threads)."""
    home, digest = hello
    volume = home / "volumes" / "counter"
    driver = ProcessDriver(home, image_store(load_project(home.parent / "herd.toml")), sandbox="none")
    done = threading.Event()
    codes: list[int | None] = []

    def list_all_the_time() -> None:
        while not done.is_set():
            codes.extend(s.exit_code for s in driver.list_now() if s.state == "exited")

    async def scenario() -> None:
        for n in range(10):
            instance = f"job-{n}"
            await driver.start(_spec(home, digest, instance, volume, argv=("sh", "-c", "sleep 0.1; exit 3")))
            deadline = time.monotonic() + 20
            state = await driver.inspect(instance)
            while state is not None and state.state == "running" and time.monotonic() < deadline:
                state = await driver.inspect(instance)
            assert state is not None and state.state == "exited" and state.exit_code == 3, state

    listers = [threading.Thread(target=list_all_the_time) for _ in range(3)]
    for lister in listers:
        lister.start()
    try:
        asyncio.run(scenario())
    finally:
        done.set()
        for lister in listers:
            lister.join(timeout=10)
        for n in range(10):  # stopped after the listers, which would otherwise race the stops
            asyncio.run(driver.stop(f"job-{n}", 1))
    assert codes and set(codes) == {3}, set(codes)


def test_a_new_driver_adopts_running_instances_and_sees_crashes(hello: tuple[Path, str]) -> None:
    home, digest = hello
    volume = home / "volumes" / "counter"

    async def scenario() -> None:
        store = image_store(load_project(home.parent / "herd.toml"))
        first = ProcessDriver(home, store)
        started = await first.start(_spec(home, digest, "web-9", volume))
        await _wait_healthy(started.port or 0)
        adopter = ProcessDriver(home, store)  # as a restarted agent would
        (adopted,) = await adopter.list()
        assert adopted.id == "web-9" and adopted.state == "running" and adopted.port == started.port
        assert adopted.pid is not None
        os.killpg(adopted.pid, 9)  # the instance crashes
        for _ in range(100):
            (state,) = await adopter.list()
            if state.state == "exited":
                break
            first.list_now()  # the parent reaps its child
            await asyncio.sleep(0.05)
        assert state.state == "exited"
        await adopter.stop("web-9", 1)
        assert await adopter.list() == []

    asyncio.run(scenario())


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_exec_runs_inside_the_instance_and_is_killed_at_its_timeout(
    hello: tuple[Path, str], sandbox: str
) -> None:
    """`exec` sees the instance's environment, working directory, volume and (sandboxed) its own
    /tmp and read-only root; a command past its timeout is killed with everything it started."""
    if sandbox == "bwrap":
        need_command("bwrap")
    home, digest = hello
    volume = home / "volumes" / "counter"

    async def scenario() -> None:
        driver = ProcessDriver(home, image_store(load_project(home.parent / "herd.toml")), sandbox=sandbox)
        one = await driver.start(_spec(home, digest, "web-1", volume))
        await driver.start(_spec(home, digest, "web-2", volume))
        (volume / "mine-web-1").write_text("x")
        script = 'echo "$HERD_INSTANCE $PORT $(pwd)"; test -s "$DATA_DIR/mine-$HERD_INSTANCE"'
        ran = await driver.exec("web-1", ["sh", "-c", script], 5)
        assert ran.exit_code == 0 and not ran.timed_out, ran
        instance, port, cwd = ran.output.split()
        assert instance == "web-1" and port == str(one.port)
        assert cwd == "/app" if sandbox == "bwrap" else cwd.endswith("/app")
        assert (await driver.exec("web-2", ["sh", "-c", script], 5)).exit_code == 1
        record = home / "run" / "instances" / "web-1.json"
        saved = record.read_text()
        older = json.loads(saved)
        del older["exec"]  # as an older herdsman wrote it: how to enter it comes from /proc
        record.write_text(json.dumps(older))
        assert (await driver.exec("web-1", ["sh", "-c", script], 5)).output.split()[0] == "web-1"
        record.write_text(saved)
        secret = _spec(home, digest, "web-3", volume)
        secret = dataclasses.replace(secret, env={**secret.env, "TOKEN": "s3cret"}, secrets=("TOKEN",))
        await driver.start(secret)
        assert "s3cret" not in (home / "run" / "instances" / "web-3.json").read_text()
        token = await driver.exec("web-3", ["sh", "-c", 'test "$TOKEN" = s3cret'], 5)
        assert token.exit_code == 0, "a secret reaches the command, though its record keeps a digest"
        if sandbox == "bwrap":
            wrote = await driver.exec("web-1", ["sh", "-c", "echo beat > /tmp/heartbeat"], 5)
            assert wrote.exit_code == 0, wrote
            assert (home / "run" / "scratch" / "web-1" / "heartbeat").read_text() == "beat\n"
            assert (await driver.exec("web-2", ["test", "-e", "/tmp/heartbeat"], 5)).exit_code == 1
            assert (await driver.exec("web-1", ["sh", "-c", "echo x > /app/x"], 5)).exit_code != 0
        started = time.monotonic()
        mark = f"{30 + os.getpid() % 1000 / 1000:.3f}"  # a sleep no one else runs
        hung = await driver.exec("web-1", ["sh", "-c", f"sleep {mark} & sleep {mark}; echo never"], 0.5)
        assert hung.timed_out and hung.exit_code is None and time.monotonic() - started < 10
        wanted = f"sleep\0{mark}\0".encode()
        for _ in range(50):  # SIGKILL is sent; the kernel may take a moment to end them
            leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmd(p) == wanted]
            if not leftovers:
                break
            await asyncio.sleep(0.05)
        assert leftovers == [], "the whole command was killed, children included"
        await driver.stop("web-1", 1)
        with pytest.raises(DriverError, match="not running"):
            await driver.exec("web-1", ["true"], 1)

    asyncio.run(scenario())


def _cmd(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""
