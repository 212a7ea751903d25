"""An in-memory driver: instances are records, nothing runs. For unit tests of pure control logic.

It keeps the Driver protocol's promises (labels, states, ports, idempotent stop) so the planner and
the agent's reconcile logic can be exercised at 10,000 instances in milliseconds. Every behaviour
tested with it is also tested on a real driver.

Given ``nodes``, it is a model of a multi-node cluster: each start is placed by the same planner
the swarm driver uses (`drivers.placement`), and a node set to drain or down makes its instances
listed as `evicted`, as the swarm driver lists them.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from herdsman.drivers.base import Drift, Drifts, ExecResult, InstanceSpec, InstanceState
from herdsman.drivers.placement import Node, evicted, place
from herdsman.errors import DriverError


class MemoryDriver:
    name = "memory"

    def settle_logs(self, instance_id: str) -> None:
        """Nothing to settle: there are no logs."""

    def discard_rootfs(self, image: str) -> Path | None:
        return None

    def refuse_image(self, image: str) -> str | None:
        return None

    def __init__(self, nodes: list[Node] | None = None) -> None:
        self.nodes = list(nodes or [])
        self.instances: dict[str, InstanceState] = {}
        self.kept: dict[str, Path] = {}
        self.drift: dict[str, list[Drift]] = {}  # what `verify` reports, set by a test
        self.exec_results: dict[str, ExecResult] = {}  # what `exec` gives (default: exit 0)
        self.started = 0
        self.stopped = 0
        self._ports = itertools.count(20000)

    async def start(self, spec: InstanceSpec) -> InstanceState:
        node = ""
        if self.nodes:
            mine = [s.node for s in self.instances.values() if _same_service(s.labels, spec.labels)]
            service = spec.labels.get("herd.service", "")
            (node,) = place(self.nodes, mine, spec.placement, 1, service=service)
        state = InstanceState(
            id=spec.id,
            labels=dict(spec.labels),
            state="running",
            port=next(self._ports) if spec.wants_port else None,
            started=time.time(),
            node=node,
        )
        self.instances[spec.id] = state
        self.started += 1
        return state

    async def stop(self, instance_id: str, grace: float, keep: Path | None = None) -> None:
        if self.instances.pop(instance_id, None) is not None:
            self.stopped += 1
            if keep is not None:
                self.kept[instance_id] = keep

    async def list(self, labels: Mapping[str, str] | None = None) -> list[InstanceState]:
        wanted = dict(labels or {}).items()
        found = [s for s in self.instances.values() if all(s.labels.get(k) == v for k, v in wanted)]
        if not self.nodes:
            return found
        return [replace(s, evicted=evicted(self.nodes, s.node)) for s in found]

    def set_node(self, node_id: str, *, availability: str | None = None, state: str | None = None) -> None:
        """What `docker node update --availability drain` (or a node lost: state "down") does to
        the model."""
        self.nodes = [
            replace(n, availability=availability or n.availability, state=state or n.state)
            if n.id == node_id
            else n
            for n in self.nodes
        ]

    async def inspect(self, instance_id: str) -> InstanceState | None:
        return self.instances.get(instance_id)

    def log_file(self, instance_id: str) -> Path | None:
        return None

    def volume_dir(self, stack: str, name: str) -> Path:
        path = Path(tempfile.gettempdir()) / f"herd-memory-{os.getpid()}" / stack / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def remove_volume(self, stack: str, name: str) -> None:
        shutil.rmtree(Path(tempfile.gettempdir()) / f"herd-memory-{os.getpid()}" / stack / name, True)

    async def verify(self, instance_id: str, spec: InstanceSpec) -> Drifts:
        return list(self.drift.get(instance_id, []))

    async def exec(self, instance_id: str, argv: Sequence[str], timeout: float) -> ExecResult:
        state = self.instances.get(instance_id)
        if state is None or state.state != "running":
            raise DriverError(f"instance {instance_id} is not running")
        return self.exec_results.get(instance_id, ExecResult(0, ""))

    def crash(self, instance_id: str, code: int = 137) -> None:
        """What kill -9 would do: the instance is listed as exited until it is stopped."""
        state = self.instances[instance_id]
        self.instances[instance_id] = replace(
            state, state="exited", exit_code=code, detail=f"exited with code {code}"
        )


def _same_service(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    keys = ("herd.stack-id", "herd.stack", "herd.env", "herd.service")
    return all(a.get(k) == b.get(k) for k in keys)
