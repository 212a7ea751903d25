"""What the swarm driver reads about a task: drift, quarantine evidence and logs, wherever it runs.

A task on the engine's own node has its container here: drift is the docker driver's (image,
command, environment, `docker diff`; `container_evidence.py`), and a quarantine copies its /tmp.
A task on another node has no container on this engine, and Swarm's API offers no exec, diff or
container inspect through the manager. What the manager does hold is checked instead: the service's
spec and the task's own copy of it (the spec that task was started from), against what the release
says, with the same messages as a local check: image by digest, command, environment (secrets by
their Swarm secret's HMAC), which Swarm secrets it gets, labels, hardening (read-only root, init,
capabilities, user, working directory), limits and mounts. What could not be checked there (the
container's file system) is said, as a `Drift` with ``checked=False``, never passed over in silence.

A quarantined remote task is kept as it is (its service and its one replica, relabelled
`herd.quarantined` so that no listing counts it again): its /tmp cannot be copied from here, so
the running task is the evidence, and its logs stay readable through the manager's `service logs`
(the record's log is written from that API). It is removed once its quarantine record is
purged or pruned (`SwarmDriver.list_now` sweeps those).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from herdsman.drivers import swarm_spec as build
from herdsman.drivers.base import (
    BASELINE_LABEL,
    UNKNOWN,
    Drift,
    Drifts,
    InstanceSpec,
    env_differences,
    launch_drifts,
    secret_digest,
    stack_key,
)
from herdsman.drivers.container_evidence import container_drifts
from herdsman.drivers.engine_files import follow_into

if TYPE_CHECKING:
    from herdsman.drivers.swarm import SwarmDriver

QUARANTINED_LABEL = build.QUARANTINED_LABEL


# pure: a service's or a task's ContainerSpec against the release ---------------------------------
# set by herdsman on the instance, not by its release: never compared
UNCOMPARED_LABELS = (*build.OWN_LABELS, BASELINE_LABEL)


def expected_labels(spec: InstanceSpec) -> dict[str, str]:
    return {k: v for k, v in spec.labels.items() if k not in UNCOMPARED_LABELS}


def spec_drifts(
    container: Mapping[str, Any],
    resources: Mapping[str, Any],
    spec: InstanceSpec,
    env_known: Mapping[str, str],
    *,
    launch: bool = True,
) -> Drifts:
    """How a ContainerSpec (and its Resources) differs from what ``spec`` starts: with ``launch``
    the image (by digest), command and environment too (`launch_drifts`, the same messages as a
    container's), always labels, hardening, limits and mounts. Pure."""
    labels = dict(container.get("Labels") or {})
    drifts: Drifts = []
    if launch:
        reference = str(container.get("Image") or "")
        digest = reference.rpartition("@")[2] if "@" in reference else reference
        argv = list(container.get("Command") or []) + list(container.get("Args") or [])
        skip = len(build.SECRET_WRAPPER) if labels.get(build.WRAPPED_LABEL) == "1" else 0
        env = dict(str(item).partition("=")[::2] for item in container.get("Env") or [])
        env.update(env_known)
        port = labels.get(build.PORT_LABEL) or ""
        drifts += launch_drifts(
            (digest, spec.image),
            (argv[skip:], spec.argv),
            (env, {**spec.env, **({"PORT": port} if port else {})}),
            spec.secrets,
        )
    changed = env_differences(
        expected_labels(spec), {k: v for k, v in labels.items() if k not in UNCOMPARED_LABELS}, ()
    )
    if changed:
        drifts.append(Drift("labels", changed))
    hardening = build.hardening(spec)
    wanted = {
        "read-only root": (bool(container.get("ReadOnly")), True),
        "init": (bool(container.get("Init")), True),
        "capabilities dropped": (sorted(container.get("CapabilityDrop") or []), ["ALL"]),
        "capabilities added": (sorted(container.get("CapabilityAdd") or []), sorted(spec.cap_add)),
        "user": (str(container.get("User") or ""), str(hardening["user"] or "")),
        "working directory": (str(container.get("Dir") or ""), str(hardening["workdir"])),
    }
    changes = [f"{k}: {was!r} -> {now!r}" for k, (now, was) in wanted.items() if now != was]
    if changes:
        drifts.append(Drift("hardening", "; ".join(changes)))
    limits = dict(resources.get("Limits") or {})
    have = {"cpu_limit": int(limits.get("NanoCPUs") or 0), "mem_limit": int(limits.get("MemoryBytes") or 0)}
    want = {"cpu_limit": 0, "mem_limit": 0, **build.limits(spec)}
    if have != want:
        drifts.append(Drift("limits", f"runs {have}, its release says {want}"))
    stack_id = spec.labels.get("herd.stack-id", spec.labels.get("herd.stack", "herd"))
    held = sorted(str(s.get("SecretName")) for s in container.get("Secrets") or [])
    secrets = sorted(build.secret_name(stack_id, spec.id, key) for key in spec.secrets)
    if held != secrets:  # a secret added or taken away (its value is judged by its HMAC above)
        drifts.append(Drift("secrets", f"gets {held}, its release says {secrets}"))
    targets = sorted(str(m.get("Target")) for m in container.get("Mounts") or [])
    expected = sorted([v.target for v in spec.volumes] + ["/tmp"])
    if targets != expected:
        drifts.append(Drift("mounts", f"mounts {targets}, its release says {expected}"))
    return drifts


def not_checked(node: str) -> Drift:
    return Drift(
        "file system",
        f"not checked: the task runs on node {node}, whose containers this engine cannot see "
        "(`docker diff` needs that node's engine); its service and task specs were checked",
        checked=False,
    )


def unique(drifts: Sequence[Drift]) -> Drifts:
    """Each finding once (a service's spec and its task's copy usually say the same)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for drift in drifts:
        if (drift.what, drift.detail) not in seen:
            seen.add((drift.what, drift.detail))
            out.append(drift)
    return out


# effectful: through the driver's engine -----------------------------------------------------------
def verify(driver: SwarmDriver, instance_id: str, spec: InstanceSpec) -> Drifts:
    """The service's spec and its task's, then (a task on this engine's node) its container."""
    service = driver._service(instance_id)
    if service is None:
        return []
    task = build.latest_task(driver.client.api.tasks(filters={"service": service["ID"]}))
    status = str(((task or {}).get("Status") or {}).get("State") or "")
    if task is None or status not in ("running", *build.STARTING):
        return []
    known = secret_values(driver, instance_id, spec)
    template = (service.get("Spec") or {}).get("TaskTemplate") or {}
    node = str(task.get("NodeID") or "")
    local = node in ("", driver.local_node)
    container = driver._container(instance_id) if local else None
    drifts: Drifts = []
    for source in (template, task.get("Spec") or {}):
        box = source.get("ContainerSpec") or {}
        drifts += spec_drifts(box, source.get("Resources") or {}, spec, known, launch=container is None)
    if container is not None and container.status == "running":
        port = container.labels.get(build.PORT_LABEL) or ""
        wrapped = container.labels.get(build.WRAPPED_LABEL) == "1"
        drifts = (
            container_drifts(
                container,
                str(driver.store.manifest(spec.image)["config"]["digest"]),
                spec.argv,
                {**spec.env, **({"PORT": port} if port else {})},
                spec.secrets,
                [v.target for v in spec.volumes] + (["/run/secrets"] if wrapped else []),  # Swarm mounts it
                argv_skip=len(build.SECRET_WRAPPER) if wrapped else 0,
                env_known=known,
            )
            + drifts
        )
    elif not local:
        drifts.append(not_checked(node))
    return unique(drifts)


def secret_values(driver: SwarmDriver, instance_id: str, spec: InstanceSpec) -> dict[str, str]:
    """For each secret of ``spec`` its expected value where the instance's Swarm secret holds
    that value (by HMAC), else a stand-in that differs from it."""
    digests = {}
    for secret in driver.client.secrets.list(filters={"label": f"herd.instance={instance_id}"}):
        labels = secret.attrs.get("Spec", {}).get("Labels") or {}
        digests[str(secret.name)] = labels.get(build.DIGEST_LABEL, "")
    key = stack_key(driver.home)
    stack_id = spec.labels.get("herd.stack-id", spec.labels.get("herd.stack", "herd"))
    known = {}
    for name in spec.secrets:
        expected = spec.env.get(name, "")
        held = digests.get(build.secret_name(stack_id, instance_id, name))
        if expected == UNKNOWN:
            continue
        if held == secret_digest(key, expected):
            known[name] = expected
        elif held is not None:
            known[name] = "\0another value"
    return known


def keep_remote(driver: SwarmDriver, service: Mapping[str, Any], node: str, keep: Path) -> None:
    """Quarantine a task on another node: keep its service and replica (relabelled, so no listing
    counts it), write its log from the manager's `service logs` beside the record, and say in
    ``keep`` why its /tmp is not there."""
    service_id = str(service["ID"])
    inspected = driver.client.api.inspect_service(service_id)
    labels = {**((inspected.get("Spec") or {}).get("Labels") or {}), QUARANTINED_LABEL: str(time.time())}
    # only the service's own labels change: the task template is the same, so Swarm restarts nothing
    driver.client.api.update_service(
        service_id,
        version=int((inspected.get("Version") or {}).get("Index", 0)),
        labels=labels,
        fetch_current_spec=True,
    )
    keep.mkdir(parents=True, exist_ok=True)
    name = str((inspected.get("Spec") or {}).get("Name") or service_id)
    (keep / ".not-kept").write_text(
        f"/tmp was not copied: the task runs on node {node}, whose containers this engine cannot "
        f"reach. The service {name} and its task are kept running, out of the pool, until this "
        f"record is purged: `docker service logs {name}`, or `docker exec` on that node.\n"
    )
    with contextlib.suppress(Exception):  # the log store's copy (made before) stays otherwise
        text = driver.client.api.service_logs(service_id, stdout=True, stderr=True, timestamps=True)
        if text:
            (keep.parent / "log").write_bytes(text if isinstance(text, bytes) else b"".join(text))


def is_quarantined(service: Mapping[str, Any]) -> bool:
    return QUARANTINED_LABEL in ((service.get("Spec") or {}).get("Labels") or {})


def follow_logs(driver: SwarmDriver, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """`docker logs -f --timestamps` of the task's container into the log file, in its own
    session: it outlives the agent and ends with the container (a task on another node:
    `docker service logs -f`, which ends with the service)."""
    host = ["-H", driver.docker_host] if driver.docker_host else []
    return follow_into(driver.docker_cli, [*host, *argv], log)
