"""Benchmark: a burst of instances (issue 12, part 4).

1. Process driver: examples/burst under its agent (`herd up -d`), a bounded load through the
   embedded router (4 keep-alive clients), then `herd scale web=COUNT` (default 1,000) and back
   to `web=1`. Reports the time to the first 100, 500 and COUNT instances healthy and in the
   router's pool, failed requests during the burst and the scale in, the agent's and the router's
   peak RSS and CPU seconds over the run, the state store's write rate (events, one transaction
   each, over the burst), and `herd ps` at COUNT (median of 3).
2. Docker driver (unless --no-docker): the same app on a `debian:bookworm` + python3 image baked
   by herdsman, COUNT_DOCKER (default 100) containers with host networking, herdsman's
   `herd scale web=100` (each one started, health-admitted and in the pool) beside
   `docker-compose up -d --scale web=100` of the same image (started, nothing checks them) in the
   same run; prints the ratio.

Everything is bounded (counts, a deadline per phase) and cleaned up by pid and label.

    .venv/bin/python bench/burst.py [--count 1000] [--docker-count 100] [--no-docker]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from herdsman.router.client import RouterClient, router_pid, stop_router  # noqa: E402
from tests.helpers import Load, free_port, herd, stop_project  # noqa: E402

EXAMPLE = ROOT / "examples" / "burst"
TICKS = os.sysconf("SC_CLK_TCK")
MEMORY_FLOOR_MB = 2048  # the burst is abandoned (and cleaned up) below this much available memory


def copy_example(root: Path, docker: bool = False) -> int:
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".herd", "__pycache__"))
    port = free_port()
    toml = root / "herd.toml"
    text = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", toml.read_text())
    if docker:
        text = text.replace('base = "host"', 'base = "debian:bookworm"\npackages = ["python3"]')
        text = text.replace('name = "burst"', f'name = "burst-{os.urandom(3).hex()}"')
        text += '\n[environment.production]\ndriver = "docker"\n'
    toml.write_text(text)
    return port


class Watch:
    """Samples the router's pool size, and the agent's and router's RSS and CPU, in a thread."""

    def __init__(self, root: Path) -> None:
        self.router = RouterClient(root / ".herd" / "run" / "router.sock")
        self.pids = {
            "agent": int((root / ".herd" / "run" / "agent-production.pid").read_text()),
            "router": router_pid(root / ".herd") or 0,
        }
        self.cpu0 = {k: cpu_seconds(p) for k, p in self.pids.items()}
        self.peak = dict.fromkeys(self.pids, 0)
        self.size = 0
        self.error = ""  # the last failure to read the router's stats
        self.low_memory = available_mb()  # the least MemAvailable seen, MB
        self.reached: dict[int, float] = {}
        self.start = time.monotonic()
        self.marks: tuple[int, ...] = ()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def expect(self, marks: tuple[int, ...]) -> None:
        self.start, self.marks, self.reached = time.monotonic(), marks, {}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                stats = self.router.call_now({"op": "stats"})["stats"]
                self.size = len(stats.get("production/web", {}).get("backends", []))
            except Exception as exc:  # the router is busy: the next sample tells (else it is reported)
                self.error = repr(exc)
            for mark in self.marks:
                if self.size >= mark and mark not in self.reached:
                    self.reached[mark] = time.monotonic() - self.start
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss_mb(pid))
            self.low_memory = min(self.low_memory, available_mb())
            time.sleep(0.5)

    def until(self, size: int, seconds: float) -> float:
        deadline = time.monotonic() + seconds
        while self.size != size:
            if self.low_memory < MEMORY_FLOOR_MB:
                raise SystemExit(f"stopped: under {MEMORY_FLOOR_MB} MB of memory left (pool at {self.size})")
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"the pool did not reach {size} within {seconds:.0f}s (at {self.size}) {self.error}"
                )
            time.sleep(0.1)
        return time.monotonic() - self.start

    def cpu(self) -> dict[str, float]:
        return {k: cpu_seconds(p) - self.cpu0[k] for k, p in self.pids.items()}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def clean_up(root: Path) -> None:
    """Remove the project, unless instances are left (their records say what to stop)."""
    left = list((root / ".herd" / "run" / "instances").glob("*.json"))
    if left:
        print(f"{len(left)} instance(s) still run: `herd -f {root}/herd.toml down` stops them")
        return
    shutil.rmtree(root.parent, ignore_errors=True)


def machine_jiffies() -> tuple[int, int]:
    """(busy, all) CPU time of the whole machine so far, in clock ticks (/proc/stat)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


def machine_busy(since: tuple[int, int]) -> float:
    """The share of the machine's CPU time that was busy since ``since``."""
    busy, total = machine_jiffies()
    return (busy - since[0]) / max(1, total - since[1])


def available_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 1 << 20


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def events_between(root: Path, since: float, until: float) -> int:
    with sqlite3.connect(root / ".herd" / "state.db") as db:
        row = db.execute("SELECT count(*) FROM events WHERE at >= ? AND at <= ?", (since, until)).fetchone()
    return int(row[0])


def burst_summary(root: Path) -> str:
    """The agent's own account of the burst (its `instance` event: window, slow-downs, pool changes)."""
    with sqlite3.connect(root / ".herd" / "state.db") as db:
        row = db.execute(
            "SELECT message FROM events WHERE message LIKE '%burst of%' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    return str(row[0]) if row else ""


def ps_seconds(root: Path) -> float:
    times = []
    for _ in range(3):
        began = time.monotonic()
        herd(root, "ps", timeout=120)
        times.append(time.monotonic() - began)
    return statistics.median(times)


def process_burst(count: int) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="bench-burst-")) / "burst"
    port = copy_example(root)
    try:
        herd(root, "up", "-d", timeout=300)
        watch = Watch(root)
        watch.until(1, 120)
        marks = tuple(m for m in (100, 500, count) if m <= count)
        with Load(f"http://127.0.0.1:{port}/", workers=4) as load:
            time.sleep(1.0)
            watch.expect(marks)
            wall = time.time()
            jiffies = machine_jiffies()
            herd(root, "scale", f"web={count}")
            total = watch.until(count, 900)
            busy = machine_busy(jiffies)
            reached = dict(watch.reached)
            writes = events_between(root, wall, time.time())
            summary = burst_summary(root)
            failed_out, served_out = len(load.failures), len(load.served)
            ps = ps_seconds(root)
            watch.expect(())
            herd(root, "scale", "web=1")
            back = watch.until(1, 600)
            time.sleep(1.0)
        watch.stop()
        return {
            "count": count,
            "reached": reached,
            "all": total,
            "failed_burst": failed_out,
            "served_burst": served_out,
            "failed_total": len(load.failures),
            "served_total": len(load.served),
            "scale_in": back,
            "peak_mb": dict(watch.peak),
            "cpu_s": watch.cpu(),
            "writes_per_s": writes / total,
            "writes": writes,
            "ps": ps,
            "failures": load.failures[:5],
            "low_memory": watch.low_memory,
            "busy": busy,
            "summary": summary,
        }
    finally:
        stop_project(root)
        stop_router(root / ".herd")
        clean_up(root)


COMPOSE = """version: "2.4"
services:
  web:
    image: {image}
    network_mode: host
    read_only: true
    working_dir: /app
    command: ["python3", "-S", "app.py"]
    environment:
      PORT: "0"
    stop_signal: SIGTERM
"""


def docker_burst(count: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="bench-burst-docker-")) / "burst"
    copy_example(root, docker=True)
    compose_dir = root.parent / "compose"
    try:
        herd(root, "up", "-d", timeout=900)  # bakes the debian image first (not timed)
        watch = Watch(root)
        watch.until(1, 300)
        watch.expect((count,))
        herd(root, "scale", f"web={count}", timeout=60)
        herd_seconds = watch.until(count, 900)
        watch.stop()
        image = docker_image_of(root)
        stop_project(root)  # its containers go (the image stays): compose runs on a quiet engine
        compose_dir.mkdir()
        (compose_dir / "docker-compose.yml").write_text(COMPOSE.format(image=image))
        compose = [
            "docker-compose",
            "-p",
            f"burst{os.getpid()}",
            "-f",
            str(compose_dir / "docker-compose.yml"),
        ]
        began = time.monotonic()
        subprocess.run(
            [*compose, "up", "-d", "--scale", f"web={count}"], check=True, capture_output=True, timeout=900
        )
        compose_seconds = time.monotonic() - began
        subprocess.run([*compose, "down", "-t", "2"], capture_output=True, timeout=600)
        return {"count": count, "herd": herd_seconds, "compose": compose_seconds}
    finally:
        stop_project(root)
        stop_router(root / ".herd")
        clean_up(root)


def docker_image_of(root: Path) -> str:
    """The engine's image id of the service's running container (what herdsman loaded)."""
    ids = subprocess.run(
        [
            "docker",
            "ps",
            "-q",
            "--filter",
            "label=herd.service=web",
            "--filter",
            f"label=herd.stack={stack(root)}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return subprocess.run(
        ["docker", "inspect", "-f", "{{.Image}}", ids[0]], capture_output=True, text=True, check=True
    ).stdout.strip()


def stack(root: Path) -> str:
    found = re.search(r'^name = "([^"]+)"', (root / "herd.toml").read_text(), re.M)
    return found.group(1) if found else ""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--docker-count", type=int, default=100)
    parser.add_argument("--no-docker", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))  # clean up on the way out
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    with open("/proc/loadavg") as handle:
        print(f"load average before: {handle.read().split()[:3]}")
    result = process_burst(args.count)
    reached = result["reached"]
    assert isinstance(reached, dict)
    print(f"process driver, 1 -> {args.count} -> 1 under load:")
    for mark, seconds in sorted(reached.items()):
        print(f"  {mark:>5} healthy and in the pool after {seconds:6.1f} s")
    print(f"  failed requests: {result['failed_burst']} of {result['served_burst']} during the burst,")
    print(
        f"                   {result['failed_total']} of {result['served_total']} in all (and the scale in)"
    )
    print(f"  scale in to 1: {result['scale_in']:.1f} s")
    print(f"  peak RSS (MB): {result['peak_mb']}; CPU seconds: {result['cpu_s']}")
    print(f"  the machine's CPU busy during the burst: {result['busy']:.0%}")
    print(f"  state store: {result['writes']} events, {result['writes_per_s']:.1f} writes/s over the burst")
    print(f"  herd ps at {args.count}: {result['ps']:.2f} s (median of 3)")
    print(f"  least memory available: {result['low_memory']} MB")
    print(f"  the agent: {result['summary']}")
    if result["failures"]:
        print(f"  first failures: {result['failures']}")
    if not args.no_docker:
        docker = docker_burst(args.docker_count)
        print(f"docker driver, 1 -> {args.docker_count}:")
        print(f"  herdsman (started, health-admitted, in the pool): {docker['herd']:.1f} s")
        print(f"  docker-compose up -d --scale (started): {docker['compose']:.1f} s")
        print(f"  ratio herdsman / compose: {docker['herd'] / docker['compose']:.2f}")


if __name__ == "__main__":
    main()
