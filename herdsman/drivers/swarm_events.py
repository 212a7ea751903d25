"""Noticing a swarm task's end at once, and a node's change, from the engine's events API.

On one node a task's container pid is a pid of this machine, and the agent's pidfd notices its end
within a millisecond. On several nodes it is not (the swarm driver gives no pid for a task on
another node), so the driver subscribes to the engine's events instead, in a thread:

- `container die` with the stack's `herd.stack-id` label: a task of this engine's node ended;
- `node update` / `node remove`: a node was drained, paused, lost or relabelled (the agent lists
  again, so instances on it are replaced elsewhere);
- Swarm's API (1.41) has no task events, and a worker's container events reach only the worker's
  engine. Where a node says how herdsman reaches its engine (the node label `herd.engine`,
  swarm_engine.py), a thread per such node subscribes to that engine's `container die` events as
  well: a task killed there is noticed as on the manager's node (BENCHMARKS.md: "Noticing a task
  killed on another Swarm node");
- as the fallback, for tasks on other nodes a thread asks the manager for their tasks every
  `REMOTE_EVERY` seconds (two calls, only while there are such tasks); tasks on a node whose
  engine stream is up are asked about only every `SUBSCRIBED_EVERY` seconds (in case an event
  was lost while the stream reconnected).

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
from herdsman.drivers.swarm_engine import ENGINE_LABEL, node_engine

if TYPE_CHECKING:
    from herdsman.drivers.swarm import SwarmDriver

REMOTE_EVERY = 0.5  # seconds between looks at tasks on other nodes
SUBSCRIBED_EVERY = 5.0  # the same, for tasks on a node whose own engine's events herdsman reads
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
        self._engines: dict[str, str] = {}  # node id -> the address its events thread reads
        self._live: set[str] = set()  # nodes whose engine stream is open now
        self._streams: dict[str, Any] = {}
        self._lock = threading.Lock()  # _engines, _streams, _reported: several threads use them
        self._full_look = 0.0  # when every remote task was last asked about
        # events from the subscription's start (to the nanosecond: a whole second would replay the
        # end of a task that ended just before, such as a deploy's migration), and after a
        # reconnection from the last event seen
        self._since = _timestamp(time.time_ns())

    def start(self) -> SwarmEvents:
        for target, name in ((self._listen, "herd-swarm-events"), (self._remote, "herd-swarm-remote")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        with contextlib.suppress(Exception):  # the manager not answering: its stream says so too
            self._watch_engines()
        return self

    def close(self) -> None:
        self.closed.set()
        with self._lock:
            streams = [self._stream, *self._streams.values()]
        for stream in streams:
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
        for thread in self._threads:
            thread.join(5)

    def _exited(self, instance: str) -> None:
        with self._lock:
            new = bool(instance) and instance not in self._reported
            if new:
                self._reported.add(instance)
        if new:
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
            with contextlib.suppress(Exception):
                self._watch_engines()
            self.on_nodes()

    # the engines of other nodes -----------------------------------------------------------------
    def _watch_engines(self) -> None:
        """A thread for each node (not this engine's) whose `herd.engine` label is new or changed;
        the stream of a node whose label went (or changed) is closed, which ends its thread."""
        for node in self.driver.client.api.nodes():
            node_id = str(node.get("ID", ""))
            address = str(((node.get("Spec") or {}).get("Labels") or {}).get(ENGINE_LABEL, ""))
            with self._lock:
                if node_id == self.driver.local_node or self._engines.get(node_id, "") == address:
                    continue
                self._engines.pop(node_id, None)
                old = self._streams.pop(node_id, None)  # a thread still connecting sees the change
                if address:
                    self._engines[node_id] = address
            if old is not None:
                with contextlib.suppress(Exception):
                    old.close()
            if not address:
                continue
            thread = threading.Thread(
                target=self._listen_node, args=(node_id, address), name=f"herd-swarm-node-{node_id[:8]}"
            )
            thread.daemon = True
            thread.start()
            self._threads.append(thread)

    def _listen_node(self, node_id: str, address: str) -> None:
        """That node's own engine's `container die` events of this stack, until its label changes."""
        since = _timestamp(time.time_ns())
        filters = {"type": ["container"], "event": ["die"], "label": [f"herd.stack-id={self.stack_id}"]}
        while not self.closed.is_set() and self._engines.get(node_id) == address:
            client = None
            try:
                client = node_engine(address)
                stream = client.events(decode=True, filters=filters, since=since)
                with self._lock:
                    current = self._engines.get(node_id) == address
                    if current:
                        self._streams[node_id] = stream
                if not current:  # its label changed while this connected
                    stream.close()
                    return
                self._live.add(node_id)
                for event in stream:
                    if self.closed.is_set():
                        return
                    if event.get("timeNano"):
                        since = _timestamp(int(event["timeNano"]))
                    self._handle(event)
            except Exception:  # unreachable or restarted: the poll covers it meanwhile
                pass
            finally:
                self._live.discard(node_id)
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
            self.closed.wait(RECONNECT_AFTER)

    # tasks on other nodes -----------------------------------------------------------------------
    def _remote(self) -> None:
        while not self.closed.wait(REMOTE_EVERY):
            with contextlib.suppress(Exception):
                self._look_remote()

    def _look_remote(self) -> None:
        local = self.driver.local_node
        api = self.driver.client.api
        services = api.services(filters={"label": [f"herd.stack-id={self.stack_id}", "herd.instance"]})
        full = time.monotonic() - self._full_look >= SUBSCRIBED_EVERY
        if full:
            self._full_look = time.monotonic()
        elsewhere = {
            s["ID"]: labels.get("herd.instance", "")
            for s in services
            for labels in [(s.get("Spec") or {}).get("Labels") or {}]
            if labels.get(build.NODE_LABEL, local) not in (local, *([] if full else self._live))
            and build.QUARANTINED_LABEL not in labels  # kept: nobody's instance any more
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
