"""Noticing a swarm task's end at once, and a node's change, from the engine's events API.

On one node a task's container pid is a pid of this machine, and the agent's pidfd notices its end
within a millisecond. On several nodes it is not (the swarm driver gives no pid for a task on
another node), so the driver subscribes to the engine's events instead, in a thread:

- `container die` with the stack's `herd.stack-id` label: a task of this engine's node ended;
- `node update` / `node remove`: a node was drained, paused, lost or relabelled (the agent lists
  again, so instances on it are replaced elsewhere);
- Swarm's API (1.41) has no task events, and a worker's container events reach only the worker's
  engine: for tasks on other nodes a second thread asks the manager for their tasks every
  `REMOTE_EVERY` seconds (one call, only while there are such tasks).

Each end is reported once per instance; the stream is asked from the subscription's start (and,
after a reconnection, from the last event seen), so an end between the two is not missed. The
callbacks are called from these threads: the agent hands them to its loop (`call_soon_threadsafe`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from herdsman.drivers import swarm_spec as build

if TYPE_CHECKING:
    from herdsman.drivers.swarm import SwarmDriver

REMOTE_EVERY = 0.5  # seconds between looks at tasks on other nodes
RECONNECT_AFTER = 1.0  # seconds before subscribing again when the stream broke


def _timestamp(nanos: int) -> str:
    """The events API's `since` to the nanosecond ("seconds.nanoseconds")."""
    return f"{nanos // 10**9}.{nanos % 10**9:09d}"


class SwarmEvents:
    def __init__(
        self,
        driver: SwarmDriver,
        stack_id: str,
        on_exit: Callable[[str], None],
        on_nodes: Callable[[], None],
    ) -> None:
        self.driver = driver
        self.stack_id = stack_id
        self.on_exit = on_exit
        self.on_nodes = on_nodes
        self.closed = threading.Event()
        self._stream: Any = None
        self._reported: set[str] = set()
        self._threads: list[threading.Thread] = []
        # events from the subscription's start (to the nanosecond: a whole second would replay the
        # end of a task that ended just before, such as a deploy's migration), and after a
        # reconnection from the last event seen
        self._since = _timestamp(time.time_ns())

    def start(self) -> SwarmEvents:
        for target, name in ((self._listen, "herd-swarm-events"), (self._remote, "herd-swarm-remote")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def close(self) -> None:
        self.closed.set()
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        for thread in self._threads:
            thread.join(5)

    def _exited(self, instance: str) -> None:
        if instance and instance not in self._reported:
            self._reported.add(instance)
            self.on_exit(instance)

    # the events stream --------------------------------------------------------------------------
    def _listen(self) -> None:
        filters = {"type": ["container", "node"]}
        while not self.closed.is_set():
            try:
                self._stream = self.driver.client.events(decode=True, filters=filters, since=self._since)
                for event in self._stream:
                    if self.closed.is_set():
                        return
                    if event.get("timeNano"):
                        self._since = _timestamp(int(event["timeNano"]))
                    self._handle(event)
            except Exception:  # the engine restarted or the stream broke: subscribe again
                pass
            self.closed.wait(RECONNECT_AFTER)

    def _handle(self, event: dict[str, Any]) -> None:
        kind, action = event.get("Type"), event.get("Action")
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        if (
            kind == "container"
            and action == "die"
            and attributes.get("herd.stack-id") == self.stack_id
            and not str(attributes.get("herd.env", "")).endswith("-migrate")  # a one-off, not an instance
        ):
            self._exited(str(attributes.get("herd.instance", "")))
        elif kind == "node":
            self.on_nodes()

    # tasks on other nodes -----------------------------------------------------------------------
    def _remote(self) -> None:
        while not self.closed.wait(REMOTE_EVERY):
            with contextlib.suppress(Exception):
                self._look_remote()

    def _look_remote(self) -> None:
        local = self.driver.local_node
        api = self.driver.client.api
        services = api.services(filters={"label": [f"herd.stack-id={self.stack_id}", "herd.instance"]})
        elsewhere = {
            s["ID"]: ((s.get("Spec") or {}).get("Labels") or {}).get("herd.instance", "")
            for s in services
            if ((s.get("Spec") or {}).get("Labels") or {}).get(build.NODE_LABEL, local) != local
        }
        if not elsewhere:
            return
        tasks: dict[str, list[Any]] = {}
        for task in api.tasks(filters={"service": list(elsewhere)}):
            tasks.setdefault(str(task.get("ServiceID")), []).append(task)
        for service, instance in elsewhere.items():
            task = build.latest_task(tasks.get(service, []))
            state = str(((task or {}).get("Status") or {}).get("State") or "")
            if state in build.ENDED:
                self._exited(instance)
