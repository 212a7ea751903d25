"""The pod template of a service on Kubernetes, built purely from its release entry. No I/O.

The Deployment and the migration Job of a service run the same pod, so they share this module:
the image by digest, the environment herdsman gives an instance (HERD_* values, PORT, secrets as
`secretKeyRef`s — a Secret's *name and key*, never a value), its volumes, and the hardening the
docker driver applies (read-only root with a private /tmp, no privilege escalation, every
capability dropped but `cap_add`, a non-root user, `[limits]` as resources).

How herd.toml maps, where it is not one to one:
- `command` becomes the container's `args` (it replaces the image's Cmd and keeps its
  Entrypoint, as herdsman and Docker do).
- `[health]` gives three probes: readiness (admission into the Service, `successes` and
  `failures` as thresholds), liveness (restart after `failures` misses) and a startup probe that
  allows `deadline` before liveness counts. Periods and timeouts are whole seconds, rounded up.
- `stop_grace`: the container has `stop_grace` after SIGTERM; a routed service first sleeps in a
  `preStop` hook (`PRESTOP_SECONDS`, or `route.drain_timeout` when shorter) so that endpoints stop
  sending to the pod before it is told to stop. `terminationGracePeriodSeconds` is their sum.
- A numeric `uid[:gid]` image user is kept. Any other (none, `root`, uid 0, or a name, which the
  kubelet cannot prove non-root) runs as `NONROOT_UID`; `herd check --for kubernetes` says so.
  The group is also the pod's fsGroup, so the claims are writable.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from herdsman.spec.models import HealthCheck, Service

NONROOT_UID = 65532  # the conventional "nonroot" user of distroless images
PRESTOP_SECONDS = 5  # time for the endpoints to drop a terminating pod before it gets SIGTERM
PORT_NAME = "http"
TMP_VOLUME = "tmp"
_NUMERIC_USER = re.compile(r"^(\d+)(?::(\d+))?$")


def whole_seconds(seconds: float, minimum: int = 1) -> int:
    """A duration as the whole seconds Kubernetes takes: rounded up, at least ``minimum``."""
    return max(minimum, math.ceil(round(seconds, 6)))


def memory_quantity(memory: str) -> str:
    """Docker's `512m` (MiB), `1g` (GiB), `64k` (KiB) or plain bytes as a Kubernetes quantity."""
    number, unit = re.fullmatch(r"(\d+)([kmg]?)", memory).groups()  # type: ignore[union-attr]
    return number + {"": "", "k": "Ki", "m": "Mi", "g": "Gi"}[unit]


def cpu_quantity(cpus: float) -> str:
    """CPUs (`0.5`) in millicores (`500m`), at least 1m."""
    return f"{max(1, round(cpus * 1000))}m"


def run_as(user: str) -> tuple[int, int, bool]:
    """(uid, gid, known) for an image's `user`: a numeric `uid[:gid]` is kept; none, `root` or 0
    becomes `NONROOT_UID`; a name cannot be resolved here (known is False, the uid is a guess)."""
    match = _NUMERIC_USER.match(user)
    if match and int(match.group(1)) != 0:
        uid = int(match.group(1))
        return uid, int(match.group(2) or uid), True
    if user in ("", "root") or match:
        return NONROOT_UID, NONROOT_UID, True
    return NONROOT_UID, NONROOT_UID, False


def probe_action(check: HealthCheck) -> dict[str, Any]:
    """The handler of a probe: httpGet, tcpSocket or exec, after the check's `type`."""
    if check.type == "http":
        return {"httpGet": {"path": check.path, "port": PORT_NAME}}
    if check.type == "tcp":
        return {"tcpSocket": {"port": PORT_NAME}}
    return {"exec": {"command": list(check.command)}}


def probes(check: HealthCheck) -> dict[str, dict[str, Any]]:
    """startupProbe, readinessProbe and livenessProbe of one health check."""
    period = whole_seconds(check.interval)
    timing = {"periodSeconds": period, "timeoutSeconds": whole_seconds(check.timeout)}
    return {
        "startupProbe": {
            **probe_action(check),
            **timing,
            "failureThreshold": max(1, math.ceil(check.deadline / period)),
        },
        "readinessProbe": {
            **probe_action(check),
            **timing,
            "successThreshold": check.successes,
            "failureThreshold": check.failures,
        },
        "livenessProbe": {**probe_action(check), **timing, "failureThreshold": check.failures},
    }


def resources(service: Service) -> dict[str, Any]:
    """`[limits]` as both requests and limits (a pod gets what it may use: no overcommit)."""
    amounts: dict[str, str] = {}
    if service.limits.cpus is not None:
        amounts["cpu"] = cpu_quantity(service.limits.cpus)
    if service.limits.memory is not None:
        amounts["memory"] = memory_quantity(service.limits.memory)
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def prestop_seconds(service: Service) -> int:
    """How long a terminating pod keeps serving before SIGTERM: only a service with a port has
    endpoints to leave; a route's shorter drain_timeout wins."""
    if service.port is None:
        return 0
    drain = service.route.drain_timeout if service.route is not None else PRESTOP_SECONDS
    return min(PRESTOP_SECONDS, math.ceil(round(drain, 6)))


def environment(
    service: Service, *, env_name: str, release: int, service_name: str, secret_name: str
) -> list[dict[str, Any]]:
    """The container's env: the release's values (sorted), herdsman's HERD_* values and PORT, then
    each secret as a reference to key NAME of the Secret ``secret_name``."""
    values = dict(sorted(service.env.items()))
    values.update({"HERD_ENV": env_name, "HERD_RELEASE": str(release), "HERD_SERVICE": service_name})
    if service.port is not None:
        values["PORT"] = str(service.port)
    entries: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in values.items()]
    entries.append({"name": "HERD_INSTANCE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    entries += [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": name}}}
        for name in service.secrets
    ]
    return entries


def container(
    name: str,
    service: Service,
    *,
    image: str,
    env: list[dict[str, Any]],
    args: tuple[str, ...],
    with_probes: bool,
) -> dict[str, Any]:
    """One hardened container; ``with_probes`` for the long-running one (not a migration)."""
    spec: dict[str, Any] = {"name": name, "image": image, "imagePullPolicy": "IfNotPresent"}
    if args:
        spec["args"] = list(args)
    spec["env"] = env
    if service.port is not None and with_probes:
        spec["ports"] = [{"name": PORT_NAME, "containerPort": service.port, "protocol": "TCP"}]
    if with_probes and service.health is not None:
        spec.update(probes(service.health))
    wait = prestop_seconds(service)
    if with_probes and wait:
        spec["lifecycle"] = {"preStop": {"sleep": {"seconds": wait}}}
    amounts = resources(service)
    if amounts:
        spec["resources"] = amounts
    spec["securityContext"] = {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"], **({"add": list(service.cap_add)} if service.cap_add else {})},
    }
    mounts = [{"name": TMP_VOLUME, "mountPath": "/tmp"}]
    mounts += [{"name": vol, "mountPath": path} for vol, path in sorted(service.volumes.items())]
    spec["volumeMounts"] = mounts
    return spec


def pod_spec(
    containers: list[dict[str, Any]],
    service: Service,
    *,
    user: str,
    claims: Mapping[str, str],
    restart: str = "Always",
    with_grace: bool = True,
    pull_secret: str | None = None,
) -> dict[str, Any]:
    """The pod around ``containers``: non-root user (and group for the volumes), seccomp, no
    service account token, no service links, /tmp and the volumes' claims (volume -> claim), and
    the Secret that logs in to a private registry (``pull_secret``)."""
    uid, gid, _ = run_as(user)
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": restart,
    }
    if with_grace:
        spec["terminationGracePeriodSeconds"] = prestop_seconds(service) + math.ceil(
            round(service.stop_grace, 6)
        )
    spec["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "fsGroup": gid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if pull_secret:
        spec["imagePullSecrets"] = [{"name": pull_secret}]
    spec["containers"] = containers
    volumes: list[dict[str, Any]] = [{"name": TMP_VOLUME, "emptyDir": {}}]
    volumes += [
        {"name": vol, "persistentVolumeClaim": {"claimName": claims[vol]}} for vol in sorted(service.volumes)
    ]
    spec["volumes"] = volumes
    return spec
