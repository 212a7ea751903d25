"""What of a herd.toml has no Kubernetes equivalent in `herd export kubernetes`'s manifests. Pure.

herdsman's guarantees do not all carry over: a cluster runs what the manifests say, not what the
agent would do. Each gap is a `Problem` at the key it is about, so `herd export kubernetes` can
print them as warnings and `herd check --for kubernetes` can list them before anyone exports.
They are warnings, not errors: the manifests are still valid, but behave differently there.
"""

from __future__ import annotations

import math

from herdsman.errors import Problem
from herdsman.export.pod import NONROOT_UID, run_as
from herdsman.spec.models import Service, Stack

RESTRICTED_CAPS = {"NET_BIND_SERVICE"}  # the one capability the "restricted" Pod Security level allows


def _whole(seconds: float) -> bool:
    return math.isclose(seconds, round(seconds)) and seconds >= 1


def _service_gaps(key: str, service: Service) -> list[Problem]:
    gaps: list[Problem] = []
    if service.image.base == "host":
        gaps.append(
            Problem(
                f"{key}.image.base",
                "a `host` image holds no operating system: it cannot run in a container on Kubernetes",
                'give the service a full base, such as "debian:bookworm" with packages = ["python3"]',
            )
        )
    user = service.image.user
    uid, _, _ = run_as(user)
    if uid == NONROOT_UID and user.split(":")[0] != str(NONROOT_UID):
        if not user or user.split(":")[0] in ("root", "0"):
            why = f"{'no user' if not user else f'user {user!r}'}: the image runs as root"
        else:
            why = f"user {user!r} is a name, which the kubelet cannot prove non-root"
        gaps.append(
            Problem(
                f"{key}.image.user",
                f"{why}; on Kubernetes its pods run as uid {NONROOT_UID} (runAsNonRoot)",
                'set a numeric non-root user, such as user = "1000:1000"',
            )
        )
    health = service.health
    if health is not None:
        if health.type == "http" and health.status != 200:
            gaps.append(
                Problem(
                    f"{key}.health.status",
                    f"an httpGet probe takes any status from 200 to 399, not only {health.status}",
                )
            )
        for field in ("interval", "timeout"):
            if not _whole(getattr(health, field)):
                gaps.append(
                    Problem(f"{key}.health.{field}", "probes count whole seconds: rounded up to the next one")
                )
        gaps.append(
            Problem(
                f"{key}.health",
                "a pod failing its liveness probe is restarted in place: it is not quarantined "
                "(taken out and kept for inspection, its logs and /tmp kept)",
                "`kubectl logs --previous POD` shows the log of the restarted container",
            )
        )
    if service.deploy.strategy != "rolling":
        gaps.append(
            Problem(
                f"{key}.deploy.strategy",
                f"{service.deploy.strategy!r} becomes a rolling update that starts every new pod first "
                "(maxSurge 100%); traffic moves pod by pod as they turn ready, not at once",
            )
        )
    if service.deploy.auto_rollback:
        gaps.append(
            Problem(
                f"{key}.deploy.auto_rollback",
                "Kubernetes does not revert a failed rollout: the Deployment stops, marked failed "
                "after progressDeadlineSeconds, and the old pods keep serving",
                "`kubectl rollout undo deployment/NAME`, or export an earlier release again",
            )
        )
    gaps += _scale_gaps(key, service)
    if service.migrate is not None:
        gaps.append(
            Problem(
                f"{key}.migrate",
                "no snapshot is taken before the migration Job, and a failed migration is not "
                "restored" + (" (rollback_data has no effect)" if service.migrate.rollback_data else ""),
                "take a VolumeSnapshot of the claims before applying (apply.sh waits for the Job)",
            )
        )
    replicas = max(service.replicas, service.scale.max if service.scale else 0)
    if service.volumes and replicas > 1:
        gaps.append(
            Problem(
                f"{key}.volumes",
                f"up to {replicas} pods share {', '.join(sorted(service.volumes))}: a ReadWriteOnce claim "
                "is shared only by pods on one node",
                "use a storage class with ReadWriteMany (edit accessModes), or one replica",
            )
        )
    extra_caps = sorted(set(service.cap_add) - RESTRICTED_CAPS)
    if extra_caps:
        gaps.append(
            Problem(
                f"{key}.cap_add",
                f"{', '.join(extra_caps)}: the 'restricted' Pod Security level refuses these capabilities",
                "run the namespace at the 'baseline' level, or do without them",
            )
        )
    if service.route is not None and service.route.host:
        gaps.append(
            Problem(
                f"{key}.route.host",
                "no Ingress is written: the Service is reached inside the cluster only",
                "add an Ingress (or Gateway route) for this host in front of the Service",
            )
        )
    if service.placement is not None and service.placement.moves():
        gaps.append(
            Problem(
                f"{key}.placement",
                "placement (Swarm node constraints, spread, max_per_node) is not exported: the "
                "scheduler places the pods anywhere",
                "add nodeSelector / topologySpreadConstraints to the Deployment by hand",
            )
        )
    if service.limits.cpus is None and service.limits.memory is None:
        gaps.append(
            Problem(
                f"{key}.limits",
                "no limits: the pods get no resource requests either (BestEffort, evicted first)",
                'set memory = "256m" and cpus = 0.5 under [service.NAME.limits]',
            )
        )
    return gaps


def _scale_gaps(key: str, service: Service) -> list[Problem]:
    scale = service.scale
    if scale is None:
        return []
    gaps: list[Problem] = []
    if scale.target_inflight is not None or scale.target_rps is not None:
        gaps.append(
            Problem(
                f"{key}.scale",
                "the router's in-flight and rate counters have no built-in metric: the autoscaler "
                "targets 70% CPU (the targets are kept as annotations for a custom-metrics adapter)",
            )
        )
    if service.limits.cpus is None:
        gaps.append(
            Problem(
                f"{key}.limits.cpus",
                "the autoscaler measures CPU against the pods' requests, and there are none",
                "set cpus under [service.NAME.limits]",
            )
        )
    if scale.min == 0:
        gaps.append(Problem(f"{key}.scale.min", "an autoscaler keeps at least 1 pod: min 0 becomes 1"))
    if scale.scale_in_window > 3600:
        gaps.append(Problem(f"{key}.scale.scale_in_window", "at most 1h on Kubernetes: cut to 3600s"))
    return gaps


def kubernetes_gaps(stack: Stack) -> list[Problem]:
    """Every setting of ``stack`` that `herd export kubernetes` cannot carry over as it is."""
    gaps: list[Problem] = []
    for name, service in sorted(stack.service.items()):
        gaps += _service_gaps(f"service.{name}", service)
    for name, volume in sorted(stack.volume.items()):
        if volume.snapshots_keep:
            gaps.append(
                Problem(
                    f"volume.{name}",
                    "no snapshots are taken or kept on Kubernetes (snapshots_keep has no effect)",
                    "VolumeSnapshots, where the storage class supports them",
                )
            )
    return gaps
