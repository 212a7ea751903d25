"""Kubernetes manifests of one release of one environment: release + spec -> manifest dicts. Pure.

`herd export kubernetes` hands a cluster what herdsman runs, so a team that outgrows one machine
keeps its herd.toml. Each service of the release gives a Deployment (image by digest, rolling with
`maxUnavailable` from `[deploy]`, 0 by default, probes, hardening: see `pod`), a Service when it has
a port, a PodDisruptionBudget, a HorizontalPodAutoscaler for `[scale]` and a Job for `[migrate]`;
each volume it mounts gives a PersistentVolumeClaim. The output is a function of its input only
(sorted names, no timestamps), so exporting the same release twice gives the same bytes.

herdsman's labels become valid Kubernetes label keys under the `herd.dev/` prefix (a key's prefix
must be a DNS subdomain): `herd.stack` -> `herd.dev/stack`, `herd.env` -> `herd.dev/env`,
`herd.service` -> `herd.dev/service`, `herd.release` -> `herd.dev/release`. `herd.image` (a digest:
too long for a label value, and its `:` is not allowed) is the annotation `herd.dev/image`;
`herd.instance` is the pod's own name (also in HERD_INSTANCE); `herd.stack-id` names a project
directory on one machine and has no meaning in a cluster. The `app.kubernetes.io/*` labels are set
too, for the tools that read them.

Order matters once: a migration must finish before the new pods start (`[migrate]` runs before any
new instance takes traffic). File names carry the order (`10-` claims, `20-` jobs, `30-` and later
the rest) and `files.apply_script` applies the claims, waits for each Job to complete, then applies
the rest. A Job's name carries the release number, since a Job's pod template cannot change.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from herdsman.export.pod import container, environment, pod_spec, whole_seconds
from herdsman.spec.models import Service, Stack

PREFIX = "herd.dev"
MAX_NAME = 63  # a DNS-1123 label: what a Service's name must be (the strictest of the kinds here)
PULL_SLACK = 120  # seconds a rollout may take beyond the health deadline: scheduling, image pull
HPA_CPU_UTILIZATION = 70
ORDER = {
    "PersistentVolumeClaim": 10,
    "Job": 20,
    "Deployment": 30,
    "Service": 40,
    "HorizontalPodAutoscaler": 50,
    "PodDisruptionBudget": 60,
}


class ServiceRelease(Protocol):
    """One service of a release, as `state.ServiceRelease` has it (the builder reads no state store)."""

    @property
    def name(self) -> str: ...
    @property
    def image(self) -> str: ...  # the manifest digest
    @property
    def config(self) -> Service: ...


@dataclass(frozen=True)
class ExportSource:
    """What one export is made of: the spec (volumes, image users), one release, where its images are.

    ``registry`` is `REGISTRY/PREFIX`, as `[environment.NAME] registry`: a service's image is
    `REGISTRY/PREFIX/SERVICE@DIGEST`, where `herd deploy` pushes it. ``image_users`` are the users of
    the images (from their configs; the recipe's `user` when absent)."""

    stack: Stack
    env: str
    release: int
    services: Mapping[str, ServiceRelease]
    registry: str
    image_users: Mapping[str, str] = field(default_factory=dict)
    volume_size: str = "1Gi"
    pull_secret: str | None = None  # a docker-registry Secret, for a registry that needs a login


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object and the file it is written to."""

    filename: str
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])


def object_name(*parts: str) -> str:
    """A DNS-1123 label from name parts; cut, with a hash of the whole to stay unique, past 63."""
    name = "-".join(part.strip("-") for part in parts if part)
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_NAME - 9].rstrip('-')}-{digest}"


def secret_name(stack: str) -> str:
    """The Secret whose keys are the stack's secret names (the cluster admin creates it)."""
    return object_name(stack, "secrets")


def claim_name(stack: str, volume: str) -> str:
    return object_name(stack, volume)


def image_reference(registry: str, service: str, digest: str) -> str:
    return f"{registry.rstrip('/')}/{service}@{digest}"


def _labels(source: ExportSource, service: str | None = None, component: str = "") -> dict[str, str]:
    labels = {
        "app.kubernetes.io/managed-by": "herdsman",
        "app.kubernetes.io/part-of": source.stack.name,
        f"{PREFIX}/stack": source.stack.name,
        f"{PREFIX}/env": source.env,
    }
    if service is not None:
        labels["app.kubernetes.io/name"] = service
        labels[f"{PREFIX}/service"] = service
    if component:
        labels["app.kubernetes.io/component"] = component
    return labels


def selector(source: ExportSource, service: str) -> dict[str, str]:
    """What picks a service's serving pods; stable across releases (a Deployment's is immutable),
    and not a migration Job's pods (their component differs)."""
    return {
        f"{PREFIX}/stack": source.stack.name,
        f"{PREFIX}/env": source.env,
        f"{PREFIX}/service": service,
        "app.kubernetes.io/component": "server",
    }


def _metadata(name: str, labels: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    return meta


def _object(api: str, kind: str, metadata: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": api, "kind": kind, "metadata": metadata, "spec": spec}


def _user(source: ExportSource, name: str) -> str:
    recipe = source.stack.service.get(name)
    return source.image_users.get(name, recipe.image.user if recipe is not None else "")


def _claims(source: ExportSource, service: Service) -> dict[str, str]:
    return {volume: claim_name(source.stack.name, volume) for volume in service.volumes}


def _container_env(source: ExportSource, name: str, service: Service) -> list[dict[str, Any]]:
    return environment(
        service,
        env_name=source.env,
        release=source.release,
        service_name=name,
        secret_name=secret_name(source.stack.name),
    )


def _strategy(service: Service) -> dict[str, Any]:
    policy = service.deploy
    if policy.max_surge == 0 and service.replicas <= 1 and service.scale is None:  # never two at once
        return {"type": "Recreate"}
    surge: int | str = "100%" if policy.strategy == "blue-green" else policy.max_surge
    return {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": surge, "maxUnavailable": policy.max_unavailable},
    }


def deployment(source: ExportSource, entry: ServiceRelease) -> dict[str, Any]:
    name, service = entry.name, entry.config
    image = image_reference(source.registry, name, entry.image)
    release_label = {f"{PREFIX}/release": str(source.release)}
    pod_labels = {**_labels(source, name, "server"), **release_label}
    box = container(
        name,
        service,
        image=image,
        env=_container_env(source, name, service),
        args=service.command,
        with_probes=True,
    )
    spec: dict[str, Any] = {}
    if service.scale is None:  # else the autoscaler owns the count: applying must not reset it
        spec["replicas"] = service.replicas
    spec["selector"] = {"matchLabels": selector(source, name)}
    spec["strategy"] = _strategy(service)
    ready = 0 if service.health is not None else whole_seconds(service.min_ready, 0)
    if ready:
        spec["minReadySeconds"] = ready
    deadline = service.health.deadline if service.health is not None else 0.0
    spec["progressDeadlineSeconds"] = whole_seconds(deadline, 0) + ready + PULL_SLACK
    spec["template"] = {
        "metadata": {"labels": pod_labels, "annotations": {f"{PREFIX}/image": entry.image}},
        "spec": pod_spec(
            [box],
            service,
            user=_user(source, name),
            claims=_claims(source, service),
            pull_secret=source.pull_secret,
        ),
    }
    metadata = _metadata(
        object_name(source.stack.name, name),
        {**_labels(source, name, "server"), **release_label},
        {f"{PREFIX}/image": entry.image},
    )
    return _object("apps/v1", "Deployment", metadata, spec)


def migration_job(source: ExportSource, entry: ServiceRelease) -> dict[str, Any] | None:
    """The `[migrate]` command as a Job of this release: once (no retry), within its timeout, from
    the new image with the service's volumes; it must complete before the Deployment is applied."""
    name, service = entry.name, entry.config
    if service.migrate is None:
        return None
    labels = {**_labels(source, name, "migration"), f"{PREFIX}/release": str(source.release)}
    box = container(
        "migrate",
        service,
        image=image_reference(source.registry, name, entry.image),
        env=_container_env(source, name, service),
        args=service.migrate.command,
        with_probes=False,
    )
    pod = pod_spec(
        [box],
        service,
        user=_user(source, name),
        claims=_claims(source, service),
        restart="Never",
        with_grace=False,
        pull_secret=source.pull_secret,
    )
    spec = {
        "backoffLimit": 0,
        "activeDeadlineSeconds": whole_seconds(service.migrate.timeout),
        "template": {"metadata": {"labels": labels}, "spec": pod},
    }
    job_name = object_name(source.stack.name, name, "migrate", str(source.release))
    return _object("batch/v1", "Job", _metadata(job_name, labels, {f"{PREFIX}/image": entry.image}), spec)


def listen_port(service: Service) -> int | None:
    """The port a service is reached on: its route's listen port, else its own port."""
    if service.port is None:
        return None
    if service.route is not None:
        port = service.route.listen.rsplit(":", 1)[-1]
        if port.isdigit():
            return int(port)
    return service.port


def service_object(source: ExportSource, entry: ServiceRelease) -> dict[str, Any] | None:
    port = listen_port(entry.config)
    if port is None:
        return None
    spec = {
        "type": "ClusterIP",
        "selector": selector(source, entry.name),
        "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
    }
    metadata = _metadata(object_name(source.stack.name, entry.name), _labels(source, entry.name, "server"))
    return _object("v1", "Service", metadata, spec)


def autoscaler(source: ExportSource, entry: ServiceRelease) -> dict[str, Any] | None:
    """`[scale]` as an HPA on CPU: the router's in-flight and rate counters have no built-in
    Kubernetes metric, so they are kept as annotations for a custom-metrics adapter."""
    scale = entry.config.scale
    if scale is None:
        return None
    low = max(1, scale.min)
    annotations = {}
    if scale.target_inflight is not None:
        annotations[f"{PREFIX}/target-inflight"] = f"{scale.target_inflight:g}"
    if scale.target_rps is not None:
        annotations[f"{PREFIX}/target-rps"] = f"{scale.target_rps:g}"
    name = object_name(source.stack.name, entry.name)
    spec = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "minReplicas": low,
        "maxReplicas": max(low, scale.max),
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": HPA_CPU_UTILIZATION},
                },
            }
        ],
        "behavior": {
            "scaleDown": {"stabilizationWindowSeconds": min(3600, math.ceil(scale.scale_in_window))}
        },
    }
    metadata = _metadata(name, _labels(source, entry.name, "server"), annotations)
    return _object("autoscaling/v2", "HorizontalPodAutoscaler", metadata, spec)


def disruption_budget(source: ExportSource, entry: ServiceRelease) -> dict[str, Any] | None:
    """At most one pod of the service down by a voluntary disruption (a node drain) at a time; a
    pod that is not ready anyway may always be evicted, so a broken pod never blocks a drain."""
    if entry.config.replicas == 0 and entry.config.scale is None:
        return None
    spec = {
        "maxUnavailable": 1,
        "selector": {"matchLabels": selector(source, entry.name)},
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }
    metadata = _metadata(object_name(source.stack.name, entry.name), _labels(source, entry.name, "server"))
    return _object("policy/v1", "PodDisruptionBudget", metadata, spec)


def volume_claim(source: ExportSource, volume: str) -> dict[str, Any]:
    """A claim per volume, ReadWriteOnce (what every storage class offers), ``volume_size``."""
    declared = source.stack.volume.get(volume)
    labels = {**_labels(source), f"{PREFIX}/volume": volume}
    annotations = (
        {f"{PREFIX}/description": declared.description} if declared and declared.description else None
    )
    spec = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": source.volume_size}},
    }
    return _object(
        "v1",
        "PersistentVolumeClaim",
        _metadata(claim_name(source.stack.name, volume), labels, annotations),
        spec,
    )


def manifests(source: ExportSource) -> list[Manifest]:
    """Every object of the export, in the order they must be applied (then by name)."""
    bodies: list[dict[str, Any]] = []
    volumes = sorted({v for entry in source.services.values() for v in entry.config.volumes})
    bodies += [volume_claim(source, volume) for volume in volumes]
    for _, entry in sorted(source.services.items()):
        for build in (migration_job, deployment, service_object, autoscaler, disruption_budget):
            body = build(source, entry)
            if body is not None:
                bodies.append(body)
    found = [
        Manifest(f"{ORDER[b['kind']]}-{b['kind'].lower()}-{b['metadata']['name']}.yaml", b) for b in bodies
    ]
    return sorted(found, key=lambda m: m.filename)
