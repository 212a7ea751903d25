"""Benchmark: what starting N instances of examples/burst costs through the ProcessDriver directly
(no agent, no router): the shared log stamper (one per home) against the stamper per instance of
an older commit, in the same run, alternating.

Each variant runs in a fresh interpreter with its own copy of the project: the older commit's
`herdsman/` comes from `git archive REV` (no worktree, nothing checked out). Measured per variant,
from the first start to the last:
- wall: until every `start` returned, and until every instance accepts a TCP connection;
- CPU seconds: this process (the driver: forks, records, FIFOs, hand-offs), the stamper
  process(es) (read from /proc while they run), and the instances themselves (the same app).

    .venv/bin/python bench/start_cost.py [--count 200] [--old REV] [--rounds 2] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def _cpu_of(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _stampers(home: Path) -> list[int]:
    """The stamper processes of ``home``: old (`-c` script reading stdin, the log file as its
    argument) or new (`stamper.py RUN_DIR`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if os.fsencode(home) in cmdline and (
            b"sys.stdin.buffer" in cmdline or b"stamper.py" in cmdline or b"drivers.stamper" in cmdline
        ):
            found.append(int(entry.name))
    return found


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def child(tree: Path, work: Path, count: int, concurrency: int) -> dict[str, float]:
    sys.path.insert(0, str(tree))
    import herdsman
    from herdsman.drivers import procfs

    assert Path(herdsman.__file__).is_relative_to(tree), herdsman.__file__
    from herdsman.drivers.base import InstanceSpec
    from herdsman.drivers.process import ProcessDriver
    from herdsman.image.bake import bake, image_store
    from herdsman.spec import load_project

    shutil.copytree(ROOT / "examples" / "burst", work, ignore=shutil.ignore_patterns(".herd", "__pycache__"))
    project = load_project(work / "herd.toml")
    digest = bake(project)[0].image.digest
    home = work / ".herd"
    driver = ProcessDriver(home, image_store(project))
    service = project.stack.service["web"]

    def spec(n: int) -> InstanceSpec:
        labels = {"herd.stack": "burst", "herd.env": "production", "herd.service": "web"}
        return InstanceSpec(
            id=f"web-{n}",
            image=digest,
            labels={**labels, "herd.instance": f"web-{n}"},
            argv=tuple(service.command),
            env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
            workdir="/app",
            stop_grace=2,
        )

    async def start_all() -> list[int]:
        gate = asyncio.Semaphore(concurrency)

        async def one(n: int) -> int:
            async with gate:
                state = await driver.start(spec(n))
                assert state.port is not None
                return state.port

        return await asyncio.gather(*(one(n) for n in range(count)))

    driver.rootfs_of(digest)  # unpacked once before the clock starts, as in a burst
    load_before = os.getloadavg()[0]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    t0 = time.monotonic()
    ports = asyncio.run(start_all())
    started = time.monotonic() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    driver_cpu = usage.ru_utime + usage.ru_stime - cpu0
    waiting = set(ports)
    deadline = time.monotonic() + 300
    while waiting and time.monotonic() < deadline:
        waiting = {p for p in waiting if not _accepts(p)}
        if waiting:
            time.sleep(0.05)
    healthy = time.monotonic() - t0
    stampers = _stampers(home)
    stamper_cpu = sum(_cpu_of(pid) for pid in stampers)
    instance_cpu = 0.0
    for state in driver.list_now():
        for pid in procfs.tree(state.pid or 0) or []:
            instance_cpu += _cpu_of(pid)
    load_after = os.getloadavg()[0]

    async def stop_all() -> None:
        gate = asyncio.Semaphore(16)

        async def one(instance_id: str) -> None:
            async with gate:
                await driver.stop(instance_id, 2)

        await asyncio.gather(*(one(s.id) for s in driver.list_now()))

    asyncio.run(stop_all())
    for pid in _stampers(home):  # the shared one (the old ones ended with their instances)
        os.kill(pid, 15)
    return {
        "started_s": round(started, 2),
        "accepting_s": round(healthy, 2),
        "unready": len(waiting),
        "driver_cpu_s": round(driver_cpu, 2),
        "stamper_cpu_s": round(stamper_cpu, 2),
        "stampers": len(stampers),
        "instances_cpu_s": round(instance_cpu, 2),
        "load1_before": load_before,
        "load1_after": load_after,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--old", default="461a0b0", help="the commit with a stamper per instance")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--child", nargs=2, metavar=("TREE", "WORK"))
    args = parser.parse_args()
    if args.child:
        result = child(Path(args.child[0]), Path(args.child[1]), args.count, args.concurrency)
        print(json.dumps(result))
        return
    print(f"{platform.node()}: {os.cpu_count()} CPUs, {platform.python_version()}, count {args.count}")
    with tempfile.TemporaryDirectory(prefix="herd-start-cost-") as tmp:
        old = Path(tmp) / "old"
        old.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.old, "herdsman"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        for round_ in range(args.rounds):
            for name, tree in (("per-instance", old), ("shared", ROOT)):
                work = Path(tmp) / f"{name}-{round_}"
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--count",
                        str(args.count),
                        "--concurrency",
                        str(args.concurrency),
                        "--child",
                        str(tree),
                        str(work),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=900,
                )
                if out.returncode != 0:
                    print(out.stdout, out.stderr)
                    raise SystemExit(f"{name} failed")
                print(f"round {round_ + 1} {name:13} {out.stdout.strip()}", flush=True)
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
