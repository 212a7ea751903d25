"""The central log store: one file per instance under `.herd/logs/SERVICE/`, kept after it is gone.

Instances write straight to their files, not through the agent, so logs keep flowing when the agent
dies. Each line is stamped on arrival (UTC, microseconds) by the home's one stamper process — see
`drivers/stamper.py` — so that `herd logs` can merge the lines of many instances by time.
A small JSON file beside each log records the instance's labels, so logs can be filtered by
release after the instance has been replaced.
"""

from __future__ import annotations

import collections
import heapq
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True, order=True)
class LogLine:
    at: float
    instance: str
    text: str

    def render(self) -> str:
        when = datetime.fromtimestamp(self.at, UTC).strftime("%H:%M:%S.%f")[:-3]
        return f"{when} {self.instance} {self.text}"


def write_labels(log_file: Path, labels: dict[str, str]) -> None:
    log_file.with_suffix(".json").write_text(json.dumps(labels, sort_keys=True))


def parse(line: str, instance: str, fallback: float) -> LogLine:
    """A stamped line: ours (microseconds) or Docker's `--timestamps` (nanoseconds)."""
    stamp, _, text = line.partition(" ")
    whole, _, fraction = stamp.removesuffix("Z").partition(".")
    try:
        if not stamp.endswith("Z") or not fraction.isdigit():
            raise ValueError(stamp)
        at = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
        return LogLine(at + int(fraction[:6].ljust(6, "0")) / 1e6, instance, text)
    except ValueError:
        return LogLine(fallback, instance, line)


def log_files(root: Path, services: Iterable[str] = (), release: int | None = None) -> list[Path]:
    """The log files of ``services`` (names of services or of instances; all when empty)."""
    wanted = set(services)
    files = []
    for file in sorted(root.glob("*/*.log")):
        if wanted and file.parent.name not in wanted and file.stem not in wanted:
            continue
        if release is not None:
            try:
                labels = json.loads(file.with_suffix(".json").read_text())
            except (OSError, ValueError):
                continue
            if labels.get("herd.release") != str(release):
                continue
        files.append(file)
    return files


def _read(file: Path, since: float) -> Iterator[LogLine]:
    fallback = file.stat().st_mtime
    with file.open(encoding="utf-8", errors="replace") as handle:
        for raw in handle:
            line = parse(raw.rstrip("\n"), file.stem, fallback)
            if line.at >= since:
                yield line


def read(files: Iterable[Path], since: float = 0.0) -> Iterator[LogLine]:
    """Every line of ``files`` newer than ``since``, merged by time."""
    return heapq.merge(*(_read(f, since) for f in files))


def history(
    root: Path,
    services: Iterable[str] = (),
    release: int | None = None,
    since: float = 0.0,
    last: int | None = None,
) -> list[LogLine]:
    """The lines already logged, merged by time: those newer than ``since``, only the ``last`` N
    of them when given (as `tail -n`)."""
    lines = read(log_files(root, services, release), since)
    if last is None:
        return list(lines)
    return list(collections.deque(lines, maxlen=max(last, 0)))


def follow(
    root: Path,
    services: Iterable[str] = (),
    release: int | None = None,
    poll: float = 0.2,
    stop_after: float | None = None,
) -> Iterator[LogLine]:
    """New lines as they arrive, from existing and newly created log files (like `tail -F`)."""
    offsets: dict[Path, int] = {f: f.stat().st_size for f in log_files(root, services, release)}
    started = time.monotonic()
    while stop_after is None or time.monotonic() - started < stop_after:
        batch: list[LogLine] = []
        for file in log_files(root, services, release):
            offset = offsets.get(file, 0)
            size = file.stat().st_size
            if size <= offset:
                continue
            with file.open("rb") as handle:
                handle.seek(offset)
                data = handle.read(size - offset)
            complete = data.rfind(b"\n") + 1
            offsets[file] = offset + complete
            for raw in data[:complete].decode(errors="replace").splitlines():
                batch.append(parse(raw, file.stem, time.time()))
        yield from sorted(batch)
        time.sleep(poll)
