"""The home's one log stamper on real processes: lines of many instances stamped and merged by time,
a last line without its newline, a stamper killed while instances write (they do not notice; what
they wrote meanwhile reaches the log once it is back), and `herd down` leaving nothing behind."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from herdsman import logs
from herdsman.drivers import procfs
from herdsman.drivers.base import InstanceSpec
from herdsman.drivers.process import ProcessDriver
from herdsman.drivers.stamping import launch_argv
from herdsman.image.bake import bake, image_store
from herdsman.spec import load_project
from tests.helpers import HELLO, hello_copy, herd, stop_project, wait_for

# one line, then (once its gate file exists) a second, one on stderr and last words without newline
GATED = """
import os, sys, time
gate, name = sys.argv[1], sys.argv[2]
print(name, "one", flush=True)
while not os.path.exists(os.path.join(gate, name)):
    time.sleep(0.02)
print(name, "two", flush=True)
print(name, "to stderr", file=sys.stderr, flush=True)
sys.stdout.write(name + " last words without newline")
"""

# numbered lines for ever; a failed write (EPIPE) ends it with code 3
COUNTER = """
import sys, time
i = 0
while True:
    try:
        print(i, flush=True)
    except BrokenPipeError:
        sys.exit(3)
    i += 1
    time.sleep(0.01)
"""


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[ProcessDriver]:
    shutil.copytree(HELLO, tmp_path / "hello", ignore=shutil.ignore_patterns(".herd", "__pycache__"))
    project = load_project(tmp_path / "hello" / "herd.toml")
    bake(project)
    driver = ProcessDriver(tmp_path / "hello" / ".herd", image_store(project), sandbox="none")
    yield driver
    for instance in driver.list_now():
        asyncio.run(driver.stop(instance.id, 1))
    driver.stamping.stop()


def _spec(driver: ProcessDriver, instance: str, *argv: str) -> InstanceSpec:
    digest = bake(load_project(driver.home.parent / "herd.toml"))[0].image.digest
    labels = {
        "herd.stack": "hello",
        "herd.env": "production",
        "herd.service": "job",
        "herd.instance": instance,
    }
    return InstanceSpec(
        id=instance,
        image=digest,
        labels=labels,
        argv=("python3", "-c", *argv),
        env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
        workdir="/app",
        stop_grace=2,
    )


def _log(driver: ProcessDriver, instance: str) -> str:
    path = driver.logs / "job" / f"{instance}.log"
    return path.read_text() if path.exists() else ""


def _exited(driver: ProcessDriver, instance: str) -> bool:
    state = asyncio.run(driver.inspect(instance))
    return state is not None and state.state == "exited"


def test_lines_of_several_instances_are_stamped_and_merged_by_time(
    driver: ProcessDriver, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    for name in ("a", "b"):
        asyncio.run(driver.start(_spec(driver, name, GATED, str(gate), name)))
    for name in ("a", "b"):
        wait_for(lambda name=name: f"{name} one\n" in _log(driver, name), 60)  # type: ignore[misc]
    (gate / "b").touch()
    wait_for(lambda: _exited(driver, "b"), 60)
    (gate / "a").touch()
    wait_for(lambda: _exited(driver, "a"), 60)
    for name in ("a", "b"):
        asyncio.run(driver.stop(name, 2))  # returns once the stamper has written the instance's end
    merged = logs.history(driver.logs, ["job"])
    texts = [line.text for line in merged]
    assert sorted(texts[:2]) == ["a one", "b one"]
    assert [t for t in texts[2:] if t.startswith("b")] == [
        "b two",
        "b to stderr",
        "b last words without newline",
    ]
    assert [t for t in texts[2:] if t.startswith("a")] == [
        "a two",
        "a to stderr",
        "a last words without newline",
    ]
    assert texts.index("b last words without newline") < texts.index("a two"), "merged by time"
    assert [line.at for line in merged] == sorted(line.at for line in merged)
    assert all(logs.parse(raw, "x", 0.0).at > 0 for raw in _log(driver, "a").splitlines())
    fifos = [p for p in (driver.home / "run" / "logpipes").iterdir() if p.is_fifo()]
    assert fifos == [], "every FIFO removed at its end"


def test_instances_outlive_a_killed_stamper_and_their_lines_arrive_later(
    driver: ProcessDriver, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    asyncio.run(driver.start(_spec(driver, "counter", COUNTER)))
    web = _spec(driver, "web", "")
    web = dataclasses.replace(web, argv=("python3", "app.py"), env={**web.env, "DATA_DIR": str(tmp_path)})
    port = asyncio.run(driver.start(web)).port
    wait_for(lambda: "hello listening" in _log(driver, "web"), 60)
    asyncio.run(driver.start(_spec(driver, "quitter", GATED, str(gate), "quitter")))
    wait_for(lambda: len(_log(driver, "counter").splitlines()) >= 5, 60)
    wait_for(lambda: "quitter one" in _log(driver, "quitter"), 60)
    pid = driver.stamping.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: driver.stamping.pid() is None, 30)
    written = len(_log(driver, "counter").splitlines())

    (gate / "quitter").touch()  # it ends while no stamper runs: its FIFO stays until the next one
    wait_for(lambda: _exited(driver, "quitter"), 60)
    assert (driver.home / "run" / "logpipes" / "quitter").exists()
    wait_for(lambda: (driver.home / "run" / "logpipes" / "counter").exists(), 5)
    state = asyncio.run(driver.inspect("counter"))
    assert state is not None and state.state == "running", "the instance did not notice"
    answer = httpx.get(f"http://127.0.0.1:{port}/", timeout=30)
    assert answer.status_code == 200, "it keeps serving (and logging) with no stamper"
    assert '"GET / HTTP/1.1" 200' not in _log(driver, "web"), "its access line waits in the pipe"
    assert len(_log(driver, "counter").splitlines()) == written, "nothing stamps while it is down"

    # the next start brings the stamper back: it adopts the FIFOs left under logpipes/
    asyncio.run(driver.start(_spec(driver, "next", GATED, str(gate), "next")))
    wait_for(lambda: len(_log(driver, "counter").splitlines()) > written + 20, 60)
    state = asyncio.run(driver.inspect("counter"))
    assert state is not None and state.state == "running"
    numbers = [int(line.text) for line in logs.history(driver.logs, ["counter"])]
    assert numbers == list(range(len(numbers))), "no line lost, none twice"
    wait_for(lambda: not (driver.home / "run" / "logpipes" / "quitter").exists(), 30)
    wait_for(lambda: '"GET / HTTP/1.1" 200' in _log(driver, "web"), 30)


def test_an_idle_stamper_exits_and_the_next_start_brings_it_back(driver: ProcessDriver) -> None:
    """Instances that all ended without `herd down` (a crash, a test) leave no stamper behind."""
    driver.stamping.idle_exit = 1.0
    asyncio.run(driver.start(_spec(driver, "quick", "print('first')")))
    wait_for(lambda: _exited(driver, "quick"), 60)
    asyncio.run(driver.stop("quick", 1))
    assert "first" in _log(driver, "quick")
    wait_for(lambda: driver.stamping.pid() is None, 60)
    assert not (driver.home / "run" / "stamper.sock").exists()
    asyncio.run(driver.start(_spec(driver, "again", "print('second')")))
    wait_for(lambda: "second" in _log(driver, "again"), 60)


def test_a_record_of_an_older_version_with_its_own_stamper_is_stopped_with_it(driver: ProcessDriver) -> None:
    """Records written before the shared stamper name a stamper per instance: stopping the
    instance still ends that process (here one that would wait on its input for ever)."""
    asyncio.run(driver.start(_spec(driver, "old", COUNTER)))
    holder = subprocess.Popen(
        [sys.executable, "-S", "-c", "import sys; sys.stdin.buffer.read()"], stdin=subprocess.PIPE
    )
    try:
        record = driver.record_files.load("old")
        assert record is not None and "stamper" not in record
        record = {**record, "stamper": holder.pid, "stamper_ticks": procfs.start_ticks(holder.pid)}
        driver.record_files.write(record)
        asyncio.run(driver.stop("old", 2))
        assert holder.wait(timeout=30) == -signal.SIGKILL, "the recorded stamper was reaped"
        assert driver.list_now() == []
    finally:
        holder.kill()
        holder.wait()


def test_herd_down_leaves_no_stamper_and_no_fifo(tmp_path: Path) -> None:
    root = tmp_path / "hello"
    hello_copy(root)
    try:
        herd(root, "deploy")
        run = root / ".herd" / "run"
        pid, ticks = map(int, (run / "stamper.pid").read_text().split())
        assert any((run / "logpipes").iterdir())
        assert "hello listening" in herd(root, "logs").stdout
        herd(root, "down", timeout=60)
        assert not (run / "stamper.pid").exists() and not (run / "stamper.sock").exists()
        assert not any((run / "logpipes").iterdir())
        assert not procfs.alive(pid, ticks), "stop returns once the stamper's process has ended"
        left = subprocess.run(["pgrep", "-f", str(run)], capture_output=True, text=True).stdout
        assert left.split() == [], "no process of the home is left"
    finally:
        stop_project(root)


def test_an_index_entry_whose_log_dir_is_gone_does_not_stop_the_next_start(
    driver: ProcessDriver, tmp_path: Path
) -> None:
    """Left by a stamper that died: FIFOs whose log directory was removed (`herd preview rm`, a
    moved project), one with a name that is not UTF-8. The next start works, and their output is
    read into logs/orphaned/ (their instances never block)."""
    pipes = driver.home / "run" / "logpipes"
    pipes.mkdir(parents=True)
    gone = tmp_path / "gone"
    writers = []
    for name in (b"ghost", b"bad\xff"):
        path = os.path.join(os.fsencode(pipes), name)
        os.mkfifo(path, 0o600)
        writer = os.open(path, os.O_RDWR)  # the instance's end
        os.write(writer, name + b" line\n")
        writers.append(writer)
    index = b"".join(n + b"\0" + os.fsencode(gone / "x.log") + b"\0" for n in (b"ghost", b"bad\xff"))
    (pipes / ".index").write_bytes(index)

    asyncio.run(driver.start(_spec(driver, "next", "print('second')")))
    wait_for(lambda: "second" in _log(driver, "next"), 60)
    orphaned = driver.logs / "orphaned" / "ghost.log"
    wait_for(lambda: orphaned.exists() and "ghost line" in orphaned.read_text(), 60)
    bad = os.path.join(os.fsencode(driver.logs / "orphaned"), b"bad\xff.log")
    wait_for(lambda: os.path.exists(bad) and b"bad\xff line" in Path(os.fsdecode(bad)).read_bytes(), 60)
    reported = (driver.logs / "stamper.log").read_text()
    assert f"ghost: {gone / 'x.log'}" in reported, "the failure is reported, naming the log"

    blocked = threading.Thread(target=os.write, args=(writers[0], b"x" * 300_000), daemon=True)
    blocked.start()  # more than a pipe holds: returns only because the stamper reads it
    blocked.join(timeout=60)
    assert not blocked.is_alive(), "the orphaned FIFO is drained"
    for writer in writers:
        os.close(writer)
    wait_for(lambda: not (pipes / "ghost").exists(), 60)


def test_a_killed_stamper_is_started_again_by_the_drivers_listing(driver: ProcessDriver) -> None:
    """No start needed: the listing the agent does every pass brings a crashed stamper back, and
    what the instance wrote meanwhile reaches its log."""
    asyncio.run(driver.start(_spec(driver, "counter", COUNTER)))
    wait_for(lambda: len(_log(driver, "counter").splitlines()) >= 5, 60)
    pid = driver.stamping.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: driver.stamping.pid() is None, 30)
    written = len(_log(driver, "counter").splitlines())

    assert [s.id for s in driver.list_now()] == ["counter"]
    revived = driver.stamping.pid()
    assert revived is not None and revived != pid
    wait_for(lambda: len(_log(driver, "counter").splitlines()) > written + 20, 60)
    numbers = [int(line.text) for line in logs.history(driver.logs, ["counter"])]
    assert numbers[: written + 20] == list(range(written + 20)), "the lines written meanwhile arrived"


def test_a_second_stamper_waits_for_the_first_to_end(driver: ProcessDriver) -> None:
    """The run lock: a second stamper started while one runs (or shuts down) adopts nothing and
    binds nothing until the first has exited; then it takes over the FIFOs."""
    asyncio.run(driver.start(_spec(driver, "counter", COUNTER)))
    wait_for(lambda: len(_log(driver, "counter").splitlines()) >= 5, 60)
    first = driver.stamping.running()
    assert first is not None
    run = str(driver.home / "run")
    launcher = subprocess.Popen(launch_argv(Path(run), 30))
    assert launcher.wait(timeout=60) == 0
    homes = lambda: subprocess.run(["pgrep", "-f", run], capture_output=True, text=True).stdout.split()  # noqa: E731
    wait_for(lambda: len(homes()) == 2, 60)  # the second stamper runs
    stamping = driver.stamping
    for _ in range(20):  # it waits on the lock: the first keeps answering and keeps its pid file
        assert stamping.running() == first and stamping.ping()
        time.sleep(0.05)
    assert len(homes()) == 2
    stamping.stop()
    assert not procfs.alive(*first)
    wait_for(lambda: stamping.running() not in (None, first) and stamping.ping(), 60)
    written = len(_log(driver, "counter").splitlines())
    wait_for(lambda: len(_log(driver, "counter").splitlines()) > written + 20, 60)
    numbers = [int(line.text) for line in logs.history(driver.logs, ["counter"])]
    assert numbers == list(range(len(numbers))), "no line lost, none twice"
