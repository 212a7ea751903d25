"""What `herd check` says of `[service.NAME.placement]`, against the environments' drivers.

The `process` and `docker` drivers run on one node (this machine): a placement there is accepted
only if that one node fits it (no constraint on a label it cannot have, `max_per_node` at least
the replicas), and refused otherwise with the reason, rather than silently ignored. A service with
a volume runs on the node that holds its volume (a local volume does not follow an instance to
another node): a placement that could move it is worth a warning.
"""

from __future__ import annotations

import socket

from herdsman.errors import Problem
from herdsman.spec.models import Stack

MULTI_NODE_DRIVERS = ("swarm",)  # drivers whose instances may run on several nodes


def this_node() -> dict[str, str]:
    """The one node of the process and docker drivers, as a constraint sees it: no labels."""
    return {"node.hostname": socket.gethostname(), "node.role": "manager"}


def placement_problems(stack: Stack) -> list[Problem]:
    """Placements that no one-node driver of an environment can honour."""
    problems: list[Problem] = []
    environments = {stack.stack.environment: "process"} | {n: e.driver for n, e in stack.environment.items()}
    node = this_node()
    for name, service in sorted(stack.service.items()):
        placement = service.placement
        if placement is None:
            continue
        key = f"service.{name}.placement"
        for env_name, driver in sorted(environments.items()):
            if driver in MULTI_NODE_DRIVERS:
                continue
            env = stack.environment.get(env_name)
            replicas = env.replicas.get(name, service.replicas) if env else service.replicas
            most = max(replicas, service.scale.max if service.scale else 0)
            where = f"environment {env_name!r} runs on the {driver} driver, which is one node (this machine)"
            for index, constraint in enumerate(placement.parsed()):
                if not constraint.holds(node):
                    problems.append(
                        Problem(
                            f"{key}.constraints[{index}]",
                            f"{where}, and it does not satisfy {constraint}",
                            'placement constraints need driver = "swarm" (nodes with labels); '
                            "remove the constraint for this environment's driver",
                        )
                    )
            if placement.max_per_node is not None and placement.max_per_node < most:
                problems.append(
                    Problem(
                        f"{key}.max_per_node",
                        f"{where}: max_per_node = {placement.max_per_node} cannot hold the "
                        f"{most} instances the service may run",
                        f'raise max_per_node to {most} or more, or use driver = "swarm" with several nodes',
                    )
                )
    return problems


def placement_warnings(stack: Stack) -> list[Problem]:
    """A service with a volume and a placement that could move it off the volume's node; a service
    whose checks run commands inside it, likewise (they reach containers on one node only)."""
    warnings: list[Problem] = []
    for name, service in sorted(stack.service.items()):
        checks = [service.health] if service.health else []
        checks += list(service.canary.checks) if service.canary else []
        if (
            not service.volumes
            and any(c.type == "command" for c in checks)
            and service.placement is not None
            and service.placement.moves()
        ):
            warnings.append(
                Problem(
                    f"service.{name}.placement",
                    f'service {name!r} has checks of type "command", run inside its instances: they '
                    "stay on the node of the swarm engine herdsman talks to (no API reaches another "
                    "node's containers), whatever spread says",
                    "use an http or tcp check to let it spread; or drop the placement",
                )
            )
        if service.volumes and service.placement is not None and service.placement.moves():
            warnings.append(
                Problem(
                    f"service.{name}.placement",
                    f"service {name!r} has volumes ({', '.join(sorted(service.volumes))}): its instances "
                    "stay on the node that holds them (the swarm engine herdsman talks to), whatever "
                    "spread says; a constraint that node does not satisfy fails the deploy",
                    "drop the placement, or move the data to a service without volumes",
                )
            )
    return warnings
