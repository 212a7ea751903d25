"""The log store: stamped lines merged by time across instances, filtered by release, followed."""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from herdsman import logs
from herdsman.drivers.stamping import Stamping

Stamp = Callable[[Path, list[str]], None]


@pytest.fixture
def _stamp(tmp_path: Path) -> Iterator[Stamp]:
    """Lines through the real log stamper, as an instance's output: written, closed, stamped (the
    last line without its newline)."""
    stamping = Stamping(tmp_path / "home")
    count = itertools.count()

    def stamp(file: Path, lines: list[str]) -> None:
        name = f"writer-{next(count)}"
        read_end, write_end = stamping.open(name, file)
        os.write(write_end, "\n".join(lines).encode())
        os.close(write_end)
        stamping.hand(name, read_end, file)
        os.close(read_end)
        stamping.settle(name, 30)
        assert not (stamping.pipes / name).exists()

    yield stamp
    stamping.stop()


def test_stamper_and_merge_by_time(tmp_path: Path, _stamp: Stamp) -> None:
    web = tmp_path / "web"
    web.mkdir()
    _stamp(web / "web-1-a1.log", ["one"])
    time.sleep(0.01)
    _stamp(web / "web-2-b1.log", ["two"])
    time.sleep(0.01)
    _stamp(web / "web-1-a1.log", ["three", "partial line without newline"])
    logs.write_labels(web / "web-1-a1.log", {"herd.release": "1"})
    logs.write_labels(web / "web-2-b1.log", {"herd.release": "2"})
    merged = list(logs.read(logs.log_files(tmp_path)))
    assert [line.text for line in merged] == ["one", "two", "three", "partial line without newline"]
    assert [line.instance for line in merged][:2] == ["web-1-a1", "web-2-b1"]
    only_two = list(logs.read(logs.log_files(tmp_path, release=2)))
    assert [line.text for line in only_two] == ["two"]
    recent = list(logs.read(logs.log_files(tmp_path), since=merged[2].at))
    assert [line.text for line in recent] == ["three", "partial line without newline"]
    assert json.loads((web / "web-1-a1.json").read_text()) == {"herd.release": "1"}


def test_unstamped_lines_are_kept(tmp_path: Path) -> None:
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "api-1.log").write_text("plain line\n")
    (line,) = logs.read(logs.log_files(tmp_path))
    assert line.text == "plain line" and line.instance == "api-1"


def test_follow_sees_new_files_and_lines(tmp_path: Path, _stamp: Stamp) -> None:
    web = tmp_path / "web"
    web.mkdir()
    _stamp(web / "web-1.log", ["old"])

    def later() -> None:
        time.sleep(0.3)
        _stamp(web / "web-1.log", ["new in old file"])
        _stamp(web / "web-2.log", ["new file"])

    thread = threading.Thread(target=later)
    thread.start()
    seen = [line.text for line in logs.follow(tmp_path, poll=0.05, stop_after=1.5)]
    thread.join()
    assert "old" not in seen
    assert sorted(seen) == ["new file", "new in old file"]


def test_docker_timestamps_parse_like_ours() -> None:
    from herdsman.logs import parse

    ours = parse("2026-11-24T04:05:29.360997Z hello", "i", 0.0)
    docker = parse("2026-11-24T04:05:29.360997123Z hello", "i", 0.0)
    assert ours.at == docker.at and ours.text == docker.text == "hello"
    assert parse("no stamp here", "i", 7.0).at == 7.0


def test_a_name_may_be_a_service_or_one_instance(tmp_path: Path, _stamp: Stamp) -> None:
    """`herd logs web` reads every web instance's file; `herd logs web-2-b1` only that one's."""
    for service, instance in (("web", "web-1-a1"), ("web", "web-2-b1"), ("worker", "worker-1-c1")):
        (tmp_path / service).mkdir(exist_ok=True)
        _stamp(tmp_path / service / f"{instance}.log", [f"from {instance}"])
    assert [f.stem for f in logs.log_files(tmp_path, ["web"])] == ["web-1-a1", "web-2-b1"]
    assert [line.text for line in logs.history(tmp_path, ["web-2-b1"])] == ["from web-2-b1"]
    both = {line.instance for line in logs.history(tmp_path, ["worker", "web-1-a1"])}
    assert both == {"worker-1-c1", "web-1-a1"}
