"""The agent and a deploy never fight over instances: one owner of what runs.

With an agent up, `herd deploy` goes through the agent's API; a deploy made in another process
anyway (the deploy lock keeps them apart) moves the state store's generation, and the agent lists
again before it heals. A singleton worker (replicas = 1, max_surge = 0) that appends its instance id
and the time to a file on a volume shows it: across many deploys there are never two writers at
once, no restart is counted, and every start and retire is exactly one event.
"""

from __future__ import annotations

import collections
import itertools
import re
import time
from pathlib import Path

import pytest

from herdsman.client import AgentClient
from herdsman.local import LocalStack
from herdsman.spec import load_project
from herdsman.state import StateStore
from tests.helpers import herd, instances, volume_dir

WORKER = '''"""A singleton worker: appends "INSTANCE TIME" to the volume every 10 ms until stopped."""
import os
import signal
import sys
import time

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
me = os.environ["HERD_INSTANCE"]
while True:
    with open("/data/writers.log", "a") as out:
        out.write(f"{me} {time.time():.6f}\\n")
    time.sleep(0.01)
'''


def add_worker(root: Path) -> None:
    """A `worker` service beside hello's web: same image recipe, no route, one replica, stop-first."""
    (root / "app" / "worker.py").write_text(WORKER)
    toml = root / "herd.toml"
    text = toml.read_text()
    image = re.search(r"\[service\.web\.image\]\n(.*?)\n\n", text, re.S)
    assert image is not None
    text += (
        '\n[service.worker]\ncommand = ["python3", "worker.py"]\nreplicas = 1\n'
        'volumes = { counter = "/data" }\n\n'
        f"[service.worker.image]\n{image.group(1)}\n\n"
        "[service.worker.deploy]\nmax_surge = 0\nmax_unavailable = 1\n"
    )
    toml.write_text(text)


def change_worker(root: Path, n: int) -> None:
    worker = root / "app" / "worker.py"
    worker.write_text(worker.read_text() + f"# deploy {n}\n")


def writer_spans(log: Path) -> list[tuple[float, float, str]]:
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue  # a line cut by a kill is not a write
        who, at = parts[0], float(parts[1])
        first.setdefault(who, at)
        last[who] = at
    return sorted((first[w], last[w], w) for w in first)


def assert_one_writer_at_a_time(log: Path) -> int:
    spans = writer_spans(log)
    for (_, end, who), (start, _, other) in itertools.pairwise(spans):
        assert start > end, f"{other} wrote at {start:.3f} while {who} still wrote until {end:.3f}"
    return len(spans)


def restarts(root: Path) -> list[str]:
    with AgentClient.for_home(root / ".herd", "production") as client:
        text = client.metrics()
    return [
        line
        for line in text.splitlines()
        if line.startswith("herd_restarts_total") and not line.endswith(" 0.0")
    ]


def check_events(root: Path, since: int) -> None:
    events = StateStore(root / ".herd" / "state.db").events("production", after=since, limit=100000)
    starts = collections.Counter(
        e["instance"] for e in events if e["kind"] == "instance" and e["message"].startswith("started ")
    )
    retires = collections.Counter(
        e["instance"] for e in events if e["kind"] == "instance" and e["message"].startswith("retired ")
    )
    assert starts and all(n == 1 for n in starts.values()), starts
    assert all(n == 1 for n in retires.values()), retires
    assert sum(retires.values()) == sum(starts.values()), "each deploy retires as many as it starts"
    heals = [e["message"] for e in events if e["kind"] == "heal"]
    assert heals == [], f"the agent healed during deploys: {heals[:5]}"


def last_event(root: Path) -> int:
    events = StateStore(root / ".herd" / "state.db").events("production", last=1)
    return int(events[-1]["id"]) if events else 0


@pytest.mark.slow
def test_deploys_through_the_agent_never_run_a_singleton_twice(
    hello_on_driver: tuple[Path, int], driver_name: str
) -> None:
    root, _port = hello_on_driver
    add_worker(root)
    herd(root, "up", "-d", timeout=600)
    since = last_event(root)
    deploys = 20 if driver_name == "process" else 10
    for n in range(deploys):
        change_worker(root, n)
        out = herd(root, "deploy", timeout=300)
        assert "deploying through it" in out.stdout, out.stdout
    time.sleep(1.0)  # a round of the agent's listing after the last deploy
    workers = [i for i in instances(root) if i["service"] == "worker" and i["state"] == "running"]
    assert len(workers) == 1, workers
    assert len([i for i in instances(root) if i["service"] == "web"]) == 2
    assert assert_one_writer_at_a_time(volume_dir(root, "counter") / "writers.log") == deploys + 1
    assert restarts(root) == []
    check_events(root, since)


def test_a_deploy_in_another_process_is_not_healed_by_the_agent(hello_on_driver: tuple[Path, int]) -> None:
    """The deploy lock keeps the agent out while another process deploys; after it, the agent lists
    again (the generation moved) instead of healing from what it saw before."""
    root, _port = hello_on_driver
    add_worker(root)
    herd(root, "up", "-d", timeout=600)
    since = last_event(root)
    for n in range(4):
        change_worker(root, n)
        with LocalStack(load_project(root / "herd.toml"), wait=30) as stack:
            stack.deploy({})
        time.sleep(0.5)  # let the agent notice the exits before the next deploy
    time.sleep(3.5)  # and one full listing
    workers = [i for i in instances(root) if i["service"] == "worker" and i["state"] == "running"]
    assert len(workers) == 1, workers
    assert assert_one_writer_at_a_time(volume_dir(root, "counter") / "writers.log") == 5
    assert restarts(root) == []
    check_events(root, since)
