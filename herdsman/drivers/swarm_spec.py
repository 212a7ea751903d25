"""Pure builders for the swarm driver: Swarm names, the service an instance becomes, and the
instance state a service and its task say. No I/O, so tests can assert on them directly (in the
manner of Kamal's `commands/`).

One herdsman instance is one Swarm service with one replica and restart condition `none`:
herdsman decides what runs and when traffic moves (start, health-admit, switch the pool, drain,
stop), Swarm only places and runs. A task that ends stays ended, for herdsman to heal or quarantine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from herdsman.drivers.base import InstanceSpec, InstanceState
from herdsman.drivers.placement import Node, evicted
from herdsman.spec.placement import Placement

PORT_LABEL = "herd.port"
LOG_LABEL = "herd.log"
WRAPPED_LABEL = "herd.secrets-wrapper"  # "1": the command starts with SECRET_WRAPPER
NODE_LABEL = "herd.node"  # the node herdsman placed the instance on (its service is pinned there)
QUARANTINED_LABEL = "herd.quarantined"  # on a kept remote service (swarm_evidence.keep_remote)
DIGEST_LABEL = "herd.digest"  # on a Swarm secret: the HMAC of its value under the stack's key
SECRET_FILE = "herd-env-"  # /run/secrets/herd-env-NAME holds the value of env entry NAME

# Swarm secrets are files; herdsman's contract is environment variables. An instance with secrets
# starts through this POSIX sh wrapper, which exports each file as its variable and execs the app:
# the values are in no label, no service spec and no container environment (`docker inspect`).
SECRET_WRAPPER = (
    "/bin/sh",
    "-c",
    f'for f in /run/secrets/{SECRET_FILE}*; do [ -e "$f" ] || continue; '
    f'export "${{f#/run/secrets/{SECRET_FILE}}}=$(cat "$f")"; done; exec "$@"',
    "herd-secrets",
)

# task states on their way to running, and the ones a task never leaves
STARTING = ("new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting")
ENDED = ("complete", "failed", "shutdown", "rejected", "orphaned", "remove")


def component(text: str) -> str:
    cleaned = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    return cleaned or "herd"


def _bounded(name: str, limit: int) -> str:
    """``name`` if it fits Swarm's limit, else its head and a hash of the whole (still unique)."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{name[: limit - 13].rstrip('-')}-{digest}"


def service_name(labels: Mapping[str, str], instance_id: str) -> str:
    """`herd-STACKID-ENV-INSTANCE`, at most 63 characters (a Swarm service name is a DNS label)."""
    stack = component(labels.get("herd.stack-id") or labels.get("herd.stack", "herd"))
    return _bounded(f"herd-{stack}-{component(labels.get('herd.env', 'env'))}-{instance_id}", 63)


def secret_name(stack_id: str, instance_id: str, key: str) -> str:
    """One Swarm secret per instance and variable (Swarm secrets cannot change: a rotated value is
    a new instance with new secrets)."""
    return _bounded(f"herd-{component(stack_id)}-{instance_id}-{key}", 64)


def volume_name(stack_id: str, name: str) -> str:
    """The same name as the docker driver's volumes: `herd-STACKID-NAME`."""
    return f"herd-{component(stack_id)}-{name}"


def image_reference(registry: str, service: str, digest: str) -> str:
    """Where the engine pulls the image from: the environment's registry, by digest, never a tag."""
    return f"{registry}/{service}@{digest}"


def split_env(spec: InstanceSpec, port: int | None) -> tuple[dict[str, str], dict[str, str]]:
    """(plain environment with PORT, secret values) of the instance."""
    plain = {k: v for k, v in spec.env.items() if k not in spec.secrets}
    if port is not None:
        plain["PORT"] = str(port)
    return plain, {k: v for k, v in spec.env.items() if k in spec.secrets}


def command(spec: InstanceSpec) -> list[str]:
    return [*SECRET_WRAPPER, *spec.argv] if spec.secrets else list(spec.argv)


def parse_bytes(size: str) -> int:
    """ "256m" -> 268435456 (the docker CLI's units: b, k, m, g)."""
    units = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    text = size.strip().lower().removesuffix("b") or "0"
    if text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def hardening(spec: InstanceSpec) -> dict[str, Any]:
    """The docker driver's hardening, as ContainerSpec fields: init as pid 1, read-only root, no
    capability but those declared, the image's user (unless the service names one). The tmpfs
    /tmp is a mount (see `mounts`), no-new-privileges is the swarm engine's own (`--no-new-privileges`:
    Swarm's API 1.41 has no per-service field for it)."""
    return {
        "init": True,
        "read_only": True,
        "cap_drop": ["ALL"],
        "cap_add": list(spec.cap_add) or None,
        "user": spec.user or None,
        "workdir": spec.workdir or "/",
        "stop_grace_period": int(spec.stop_grace * 1e9),
    }


def limits(spec: InstanceSpec) -> dict[str, int]:
    """Resources limits: nanocpus and memory bytes."""
    out = {}
    if spec.cpus:
        out["cpu_limit"] = int(spec.cpus * 1e9)
    if spec.memory:
        out["mem_limit"] = parse_bytes(spec.memory)
    return out


def started_at(value: str) -> float:
    whole, _, fraction = value.removesuffix("Z").partition(".")
    try:
        return datetime.fromisoformat(whole + "+00:00").timestamp() + float("0." + (fraction or "0"))
    except ValueError:
        return 0.0


def latest_task(tasks: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The newest task of a service (with restart `none` there is one, but Swarm keeps history):
    the last created. Not the last changed: after a `service update` behind herdsman's back, the
    replaced task's final status can arrive after its successor runs, and would make a running
    instance look exited."""
    return max(
        tasks,
        key=lambda t: (started_at(str(t.get("CreatedAt") or "")), (t.get("Version") or {}).get("Index", 0)),
        default=None,
    )


def node_of(node: Mapping[str, Any]) -> Node:
    """A node as the Swarm API describes it. Its address is `Status.Addr` (where the manager sees
    it); a manager may report 0.0.0.0 there, then its `ManagerStatus.Addr` host is used."""
    spec = node.get("Spec") or {}
    status = node.get("Status") or {}
    addr = str(status.get("Addr") or "")
    if addr in ("", "0.0.0.0"):
        addr = (
            str((node.get("ManagerStatus") or {}).get("Addr") or "127.0.0.1").rpartition(":")[0]
            or "127.0.0.1"
        )
    return Node(
        id=str(node.get("ID", "")),
        hostname=str((node.get("Description") or {}).get("Hostname") or ""),
        role=str(spec.get("Role") or "worker"),
        labels=dict(spec.get("Labels") or {}),
        availability=str(spec.get("Availability") or "active"),
        state=str(status.get("State") or "unknown"),
        addr=addr,
    )


def constraints(placement: Placement | None, node_id: str) -> list[str]:
    """The user's constraints (Swarm checks them too) and the node herdsman chose."""
    return [*(placement.constraints if placement else ()), f"node.id == {node_id}"]


def instance_state(
    service: Mapping[str, Any],
    task: Mapping[str, Any] | None,
    nodes: Sequence[Node] = (),
    local: str = "",
) -> InstanceState:
    """What a service and its task say about the instance: running (or on its way: the task is
    being prepared), or exited with the container's code and Swarm's reason. With ``nodes``: the
    node it runs on, its address there, and whether it must move (its node drained or lost). A
    pid is only a pid on this machine for a task of ``local`` (the engine's own node)."""
    spec = service.get("Spec") or {}
    all_labels = dict(spec.get("Labels") or {})
    labels = {k: v for k, v in all_labels.items() if k.startswith("herd.") and k not in OWN_LABELS}
    status = (task or {}).get("Status") or {}
    state = str(status.get("State") or "new")
    container = status.get("ContainerStatus") or {}
    running = state == "running" or state in STARTING
    code = container.get("ExitCode")
    detail = ""
    if not running:
        reason = str(status.get("Err") or status.get("Message") or "")
        detail = f"task {state}" + (f" with code {code}" if code is not None else "")
        detail += f": {reason}" if reason else ""
    port = all_labels.get(PORT_LABEL) or ""
    node = str((task or {}).get("NodeID") or all_labels.get(NODE_LABEL) or "")
    where = next((n for n in nodes if n.id == node), None)
    pid = int(container.get("PID") or 0) or None
    return InstanceState(
        id=all_labels.get("herd.instance", str(spec.get("Name", ""))),
        labels=labels,
        state="running" if running else "exited",
        port=int(port) if port.isdigit() else None,
        started=started_at(str(service.get("CreatedAt") or "")),
        pid=pid if not local or node in ("", local) else None,
        exit_code=None if running else (int(code) if code is not None else None),
        detail=detail if not running else ("" if state == "running" else f"task {state}"),
        extra={
            "service": str(service.get("ID", "")),
            "task": str((task or {}).get("ID", "")),
            "container": str(container.get("ContainerID", "")),
        },
        host=where.addr if where else "127.0.0.1",
        node=node,
        evicted=evicted(nodes, node) if nodes and running else "",
    )


OWN_LABELS = (LOG_LABEL, PORT_LABEL, WRAPPED_LABEL, NODE_LABEL, QUARANTINED_LABEL)
