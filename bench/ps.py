"""Benchmark: `herd ps` at COUNT instances with an agent (issue 12, part 4: under 1 s at 1,000).

examples/burst under its agent (`herd up -d`, then `herd scale web=COUNT`, default 1,000); once the
agent reports every instance running and checked, ROUNDS interleaved rounds (default 5) time, each
as a fresh process as a user runs it:

- `herd ps` (this checkout);
- the peer, `ps -e -o pid,ppid,stat,etimes,args`: procps listing every process on the host — the
  same kind of work (enumerate records, read each one's state, print columns), done by a C tool
  with no interpreter to start, over a superset of the instances (each instance is 3 processes,
  plus its log stamper, plus the rest of the machine). `docker ps` of as many containers would be
  the closer peer but cannot run 1,000 containers here;
- for context, not as peers: `curl` of the agent's `GET /v1/instances` (the answer `herd ps`
  formats: the agent's own share), `python -S -c pass` (an interpreter's start) and, with
  `--before DIR` (a checkout of an earlier herdsman, e.g. `git archive`), that version's `herd ps`
  on the same stack.

Prints medians, spreads and the ratio herd ps / ps -e, and the load average before and after.

    .venv/bin/python bench/ps.py [--count 1000] [--rounds 5] [--before /tmp/herdsman-before]
        [--project DIR]   (a burst copy already at COUNT, e.g. after bench/burst.py's own setup)
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from herdsman.client import AgentClient  # noqa: E402
from tests.helpers import herd, stop_project  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from burst import clean_up, copy_example  # noqa: E402


def timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    """Seconds of one run, from ``cwd`` (not this checkout: `-m herdsman` would load it first)."""
    began = time.monotonic()
    subprocess.run(
        command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120, env=env, cwd=cwd
    )
    return time.monotonic() - began


def wait_ready(root: Path, count: int, seconds: float) -> None:
    """Until the agent lists ``count`` running instances, each with its liveness result."""
    deadline = time.monotonic() + seconds
    with AgentClient.for_project(root / "herd.toml") as agent:
        while time.monotonic() < deadline:
            listed = [i for i in agent.instances() if i["state"] == "running"]
            if len(listed) == count and all(i["health"] == "healthy" for i in listed):
                return
            time.sleep(1.0)
    raise SystemExit(f"{count} healthy instances not reached within {seconds:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", type=Path, help="a checkout of an earlier herdsman to time beside")
    parser.add_argument(
        "--project",
        type=Path,
        help="time an examples/burst copy already scaled to COUNT under its agent (left running): "
        "no second burst on a shared machine",
    )
    args = parser.parse_args()
    given = args.project is not None
    root = args.project.resolve() if given else Path(tempfile.mkdtemp(prefix="bench-ps-")) / "burst"
    if not given:
        copy_example(root)
    toml = str(root / "herd.toml")
    home = root / ".herd"
    curl = shutil.which("curl")
    try:
        if not given:
            herd(root, "up", "-d", timeout=300)
            herd(root, "scale", f"web={args.count}", timeout=900)
        wait_ready(root, args.count, 900)
        time.sleep(5.0)  # the burst's own work settles
        token = (home / "agent-production.token").read_text().strip()
        before_env = {**os.environ, "PYTHONPATH": str(args.before)} if args.before else None
        commands: dict[str, tuple[list[str], dict[str, str] | None]] = {
            "herd ps": ([sys.executable, "-m", "herdsman", "-f", toml, "ps"], None),
            "ps -e": (["ps", "-e", "-o", "pid,ppid,stat,etimes,args"], None),
            "python -S -c pass": ([sys.executable, "-S", "-c", "pass"], None),
        }
        if curl:
            socket = str(home / "run" / "agent-production.sock")
            auth = f"Authorization: Bearer {token}"
            commands["curl GET /v1/instances"] = (
                [curl, "-sf", "--unix-socket", socket, "-H", auth, "http://agent/v1/instances"],
                None,
            )
        if args.before:
            commands["herd ps (--before)"] = (
                [sys.executable, "-m", "herdsman", "-f", toml, "ps"],
                before_env,
            )
        load_before = os.getloadavg()
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.rounds):  # interleaved: each round runs every command once
            for name, (command, env) in commands.items():
                times[name].append(timed(command, root, env))
        load_after = os.getloadavg()
        shown = herd(root, "ps").stdout.splitlines()
        processes = len(subprocess.run(["ps", "-e"], capture_output=True, text=True).stdout.splitlines()) - 1
    finally:
        if not given:
            stop_project(root)
            clean_up(root)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"load average before / after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    listed = sum(1 for line in shown if line.startswith("web-"))
    print(f"instances listed by herd ps: {listed}; processes listed by ps -e: {processes}")
    print(f"{'command':<26} {'median s':>9} {'min s':>7} {'max s':>7}   ({args.rounds} rounds)")
    for name, seconds in times.items():
        print(f"{name:<26} {statistics.median(seconds):>9.3f} {min(seconds):>7.3f} {max(seconds):>7.3f}")
    ratio = statistics.median(times["herd ps"]) / statistics.median(times["ps -e"])
    print(f"ratio herd ps / ps -e: {ratio:.2f}")


if __name__ == "__main__":
    main()
