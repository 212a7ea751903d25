"""Benchmark: a rolling deploy of 5 instances under load on Docker Swarm, herdsman against Swarm's
own `docker service update`, in the same run on the same single-node swarm.

Why: issue 15 maps one herdsman instance to one Swarm service of one replica and never uses
`service update` for a rollout, because Swarm's own rolling update drops requests. This measures
that claim each time it is run, beside its peer:

- herdsman: examples/hello (debian:bookworm + python3), 5 replicas, `driver = "swarm"`, behind the
  embedded router; `herd deploy` of a changed app (rolling, max_surge 1, max_unavailable 0: a new
  service per instance on its own port, health-admitted, the pool switched, the old one drained);
- Swarm: the same image (pushed by `herd push`, run by digest) as one service of 5 replicas on host
  networking, each task on its own 127.0.0.1 port (`PORT=NNNN{{.Task.Slot}}`, a service template),
  with a Docker healthcheck, hardened as herdsman's (read-only root, tmpfs /tmp, caps dropped,
  init), behind HAProxy 2.6 checking every backend every 100 ms with `retries 3` and `option
  redispatch` (Swarm's best case: its ingress mesh does not work here and publishes on 0.0.0.0);
  `docker service update --image` with `--update-order start-first`, then `stop-first`
  (parallelism 1, failure action rollback). Start-first cannot complete on host networking: the new
  task of a slot needs the port its old task still holds, fails, and Swarm rolls back; what that
  costs is measured too.

Both take the same bounded load: 8 keep-alive clients (GET /) for the length of the rollout plus a
second either side. Everything is created under fresh names and removed at the end (services,
volumes, the images the engine pulled, the registry and HAProxy processes it started, by pid); the
swarm itself is never left, joined or initialised. Needs the swarm engine of scripts/system-deps
(unix:///run/herd-swarm/docker.sock), docker-registry and haproxy.

    .venv/bin/python bench/swarm_deploy.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from peers import HAPROXY_IN_FRONT  # noqa: E402

from tests.helpers import (  # noqa: E402
    SWARM_HOST,
    Load,
    RunningRegistry,
    hello_copy,
    herd,
    stop_project,
    wait_for,
)

REPLICAS = 5
WORKERS = 8
UPDATE_DEADLINE = 300.0  # seconds for one `service update` (or its rollback) to settle
SWARM = ["docker", "-H", SWARM_HOST]
HAPROXY = HAPROXY_IN_FRONT
# Docker runs a healthcheck by exec in the container (a runc exec each time): bash's /dev/tcp asks
# the task's own port for /healthz, far cheaper than starting python3 (the image has no curl)
HEALTH = (
    "exec 3<>/dev/tcp/127.0.0.1/$PORT && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 "
    "&& head -n1 <&3 | grep -q ' 200 '"
)
Result = tuple[float, int, int, str]  # seconds, requests, failed, how it ended


def swarm(*args: str, check: bool = True) -> str:
    done = subprocess.run([*SWARM, *args], capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def counted(load: Load) -> tuple[int, int]:
    """(requests, failed): answers plus transport errors; failed = non-200 answers and errors."""
    errors = sum(1 for f in load.failures if not f[:3].isdigit())
    return len(load.served) + errors, len(load.failures)


def change_app(root: Path, n: int) -> None:
    app = root / "app" / "app.py"
    app.write_text(app.read_text() + f"\n# change {n}\n")


def template(work: Path, registry: str) -> Path:
    """examples/hello on debian:bookworm + python3 for the swarm driver, baked once."""
    root = work / "template" / "hello"
    hello_copy(root)
    toml = root / "herd.toml"
    text = toml.read_text().replace('base = "host"', 'base = "debian:bookworm"\npackages = ["python3"]')
    text = text.replace("replicas = 2", f"replicas = {REPLICAS}")
    env = f'driver = "swarm"\nregistry = "{registry}/bench"\ndocker_host = "{SWARM_HOST}"\n'
    toml.write_text(text + f"\n[environment.production]\n{env}")
    say("baking examples/hello on debian:bookworm (once)")
    herd(root, "bake", timeout=900)
    return root


def run_herdsman(work: Path, base: Path, rounds: int) -> list[Result]:
    root = work / "herdsman" / "hello"
    port = hello_copy(root, template=base)
    results = []
    try:
        say(f"herdsman: release 1, {REPLICAS} services on the swarm")
        herd(root, "deploy", timeout=900)
        for n in range(1, rounds + 1):
            change_app(root, n)
            herd(root, "bake", timeout=900)  # baking is not what is compared
            say(f"herdsman: rolling deploy {n} under load")
            with Load(f"http://127.0.0.1:{port}/", workers=WORKERS) as load:
                time.sleep(1.0)
                started = time.monotonic()
                herd(root, "deploy", timeout=900)
                seconds = time.monotonic() - started
                time.sleep(1.0)
            results.append((seconds, *counted(load), f"release {n + 1} serving"))
    finally:
        stop_project(root)
    return results


def push(root: Path, target: str) -> str:
    """`herd push` the newest bake of web; the reference by digest it printed."""
    out = herd(root, "push", "web", target, timeout=300).stdout
    found = re.search(r"(\S+@sha256:[0-9a-f]{64})", out)
    if found is None:
        raise RuntimeError(f"herd push printed no digest:\n{out}")
    return found.group(1)


def free_slot_ports() -> str:
    """A prefix P such that the ports P1..P5 are free on 127.0.0.1 (a task's port is P + its slot)."""
    for _ in range(200):
        prefix = str(random.randint(2000, 6000))
        ports = [int(f"{prefix}{slot}") for slot in range(1, REPLICAS + 1)]
        try:
            for p in ports:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", p))
        except OSError:
            continue
        return prefix
    raise RuntimeError("no free run of ports for the swarm service")


def update_status(name: str) -> tuple[str, str]:
    """(state, started at) of the service's last update."""
    status = json.loads(swarm("service", "inspect", name))[0].get("UpdateStatus") or {}
    return str(status.get("State", "")), str(status.get("StartedAt", ""))


def healthy_tasks(name: str) -> int:
    """How many of the service's containers run and passed their healthcheck."""
    ids = swarm("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={name}").split()
    if not ids:
        return 0
    states = swarm("inspect", "-f", "{{.State.Health.Status}}", *ids).split()
    return sum(1 for s in states if s == "healthy")


def settle(name: str, before: str) -> str:
    """Wait until the update started after ``before`` (the last one's start) is over, bounded; its
    final state (a rollback is part of the update it undoes)."""
    deadline = time.monotonic() + UPDATE_DEADLINE
    state = ""
    while time.monotonic() < deadline:
        state, started = update_status(name)
        if started != before and state in ("completed", "paused", "rollback_completed", "rollback_paused"):
            return state
        time.sleep(0.1)
    return f"still {state or 'updating'} after {UPDATE_DEADLINE:.0f}s"


def create_service(name: str, image: str, prefix: str, volume: str) -> None:
    swarm(
        "service", "create", "--detach", "--quiet", "--name", name, "--label", "herd.bench=swarm_deploy",
        "--replicas", str(REPLICAS), "--network", "host", "--no-resolve-image",
        "--read-only", "--init", "--cap-drop", "ALL", "--workdir", "/app",
        "--mount", "type=tmpfs,target=/tmp", "--mount", f"type=volume,source={volume},target=/data",
        "--env", f"PORT={prefix}{{{{.Task.Slot}}}}", "--env", "DATA_DIR=/data",
        "--env", "GREETING=Hello from herdsman", "--env", "PYTHONUNBUFFERED=1",
        "--health-cmd", f"bash -c {shlex.quote(HEALTH)}", "--health-interval", "1s",
        "--health-timeout", "5s", "--health-retries", "3", "--health-start-period", "10s",
        "--update-parallelism", "1", "--update-delay", "0s", "--update-failure-action", "rollback",
        "--rollback-parallelism", "1", "--stop-grace-period", "10s",
        image, "python3", "app.py",
    )  # fmt: skip


def update(name: str, image: str, order: str, front: int) -> Result:
    say(f"swarm: service update --update-order {order} under load")
    with Load(f"http://127.0.0.1:{front}/", workers=WORKERS) as load:
        time.sleep(1.0)
        before = update_status(name)[1]
        started = time.monotonic()
        swarm("service", "update", "--detach", "--quiet", "--no-resolve-image", "--image", image,
              "--update-order", order, name)  # fmt: skip
        ended = settle(name, before)
        seconds = time.monotonic() - started
        time.sleep(1.0)
    return (seconds, *counted(load), ended)


def run_swarm(work: Path, base: Path, registry: str, rounds: int) -> list[tuple[Result, Result]]:
    root = work / "swarm" / "hello"
    hello_copy(root, template=base)
    herd(root, "bake", timeout=900)  # the copy is a stack of its own: its bake (from the cache)
    images = [push(root, f"{registry}/swarmpeer/web:v1")]
    change_app(root, 1)
    herd(root, "bake", timeout=900)
    images.append(push(root, f"{registry}/swarmpeer/web:v2"))
    name = f"herdbench-{os.getpid()}"
    volume = f"{name}-counter"
    prefix = free_slot_ports()
    front = int(str(random.randint(2000, 6000)) + "0")  # P0: never a task's port
    servers = "\n".join(
        f"    server web{slot} 127.0.0.1:{prefix}{slot} check inter 100ms fall 1 rise 1"
        for slot in range(1, REPLICAS + 1)
    )
    (root / "haproxy.cfg").write_text(HAPROXY.format(port=front, servers=servers))
    proxy = subprocess.Popen(["haproxy", "-f", str(root / "haproxy.cfg")], stderr=subprocess.DEVNULL)
    results = []
    try:
        say(f"swarm: service {name}, {REPLICAS} replicas")
        create_service(name, images[0], prefix, volume)
        wait_for(lambda: healthy_tasks(name) == REPLICAS, UPDATE_DEADLINE, every=0.5)
        time.sleep(1.0)  # HAProxy has seen every backend up
        current = 0
        for _ in range(rounds):
            target = images[1 - current]
            start_first = update(name, target, "start-first", front)
            wait_for(lambda: healthy_tasks(name) == REPLICAS, UPDATE_DEADLINE, every=0.5)
            stop_first = update(name, target, "stop-first", front)
            if stop_first[3] == "completed":
                current = 1 - current
            wait_for(lambda: healthy_tasks(name) == REPLICAS, UPDATE_DEADLINE, every=0.5)
            results.append((start_first, stop_first))
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)
        remove_service(name, volume)
        stop_project(root)
    return results


def remove_service(name: str, volume: str) -> None:
    """The service, then (once its containers are gone) its volume."""
    swarm("service", "rm", name, check=False)
    label = f"label=com.docker.swarm.service.name={name}"
    wait_for(lambda: not swarm("ps", "-aq", "--filter", label, check=False).split(), 60, every=0.5)
    swarm("volume", "rm", "-f", volume, check=False)


def remove_pulled(registry: str) -> None:
    """The images the swarm engine pulled from this run's registry (herdsman's and the peer's)."""
    pulled = swarm("images", "-q", "--filter", f"reference={registry}/*/*", check=False).split()
    if pulled:
        swarm("rmi", "-f", *sorted(set(pulled)), check=False)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def report(ours: list[Result], peers: list[tuple[Result, Result]]) -> None:
    print(f"{'':<44}{'duration':>10}{'requests':>10}{'failed':>8}  ended")
    rows: list[tuple[str, Result]] = []
    for n, (mine, (start_first, stop_first)) in enumerate(zip(ours, peers, strict=True), start=1):
        rows += [
            (f"[{n}] herdsman rolling deploy of {REPLICAS}", mine),
            (f"[{n}] swarm service update, start-first", start_first),
            (f"[{n}] swarm service update, stop-first", stop_first),
        ]
    for label, (seconds, served, failed, ended) in rows:
        print(f"{label:<44}{seconds:>9.2f}s{served:>10}{failed:>8}  {ended}")
    print("\nratios, herdsman / swarm (duration; failed share of requests):")
    for n, (mine, (start_first, stop_first)) in enumerate(zip(ours, peers, strict=True), start=1):
        share = mine[2] / max(mine[1], 1)
        for order, peer in (("start-first", start_first), ("stop-first", stop_first)):
            peer_share = peer[2] / max(peer[1], 1)
            print(
                f"  [{n}] vs {order}: duration {ratio(mine[0], peer[0])}, failed {share:.2%} vs "
                f"{peer_share:.2%} (ratio {ratio(share, peer_share)})"
            )
    print(
        "\nnote: start-first cannot complete on host networking with one port per slot: the new task"
        "\nneeds the port its old task still holds, fails to bind, and Swarm rolls the service back."
    )


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def main() -> None:
    # a Ctrl-C or a kill still removes what this run created (the `finally` blocks)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda number, _frame: sys.exit(128 + number))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="rollouts of each kind (default 1)")
    rounds = max(1, parser.parse_args().rounds)
    for tool in ("docker", "docker-registry", "haproxy"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed (make system installs it)")
    state = subprocess.run(
        [*SWARM, "info", "--format", "{{.Swarm.LocalNodeState}}"], capture_output=True, text=True
    )
    if state.stdout.strip() != "active":
        sys.exit(f"no swarm manager answers on {SWARM_HOST} (scripts/system-deps starts one, as root)")
    engine = swarm("version", "--format", "{{.Server.Version}}").strip()
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, swarm engine {engine}, load average {os.getloadavg()[0]:.1f}"
    )
    work = Path(tempfile.mkdtemp(prefix="bench-swarm-deploy-"))
    registry = RunningRegistry(work / "registry")
    try:
        base = template(work, registry.address)
        ours = run_herdsman(work, base, rounds)
        peers = run_swarm(work, base, registry.address, rounds)
    finally:
        registry.stop()
        remove_pulled(registry.address)
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    report(ours, peers)


if __name__ == "__main__":
    main()
