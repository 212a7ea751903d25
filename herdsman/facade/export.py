"""`herd export` for the faces: a release handed to another engine, and what cannot be carried over.

The builders in `herdsman.export` are pure (release + spec -> manifest dicts); this reads the
release, writes the files and returns what the face reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from herdsman.errors import Problem
    from herdsman.spec import Project


@dataclass(frozen=True)
class KubernetesExport:
    env: str
    release: int
    written: list[Path]
    objects: int
    gaps: list[Problem]  # what has no Kubernetes equivalent (warnings)
    secrets: list[str]  # the secret names the pods read
    secret_name: str  # from this Secret, which the cluster admin creates


def export_kubernetes(
    project: Project,
    env: str | None,
    output: Path,
    *,
    number: int | None = None,
    registry: str | None = None,
    check_registry: bool = True,
    volume_size: str = "1Gi",
    pull_secret: str | None = None,
) -> KubernetesExport:
    """Write ``env``'s release ``number`` (default: the one serving now) as manifests in ``output``."""
    from herdsman.export.files import header, rendered, write_export
    from herdsman.export.gaps import kubernetes_gaps
    from herdsman.export.kubernetes import manifests, secret_name
    from herdsman.export.source import export_source

    env_name = env or project.stack.stack.environment
    source = export_source(
        project,
        env_name,
        number=number,
        registry=registry,
        check_registry=check_registry,
        volume_size=volume_size,
        pull_secret=pull_secret,
    )
    objects = manifests(source)
    written = write_export(output, rendered(objects, header(project.stack.name, env_name, source.release)))
    secrets = sorted({s for entry in source.services.values() for s in entry.config.secrets})
    return KubernetesExport(
        env_name,
        source.release,
        written,
        len(objects),
        kubernetes_gaps(project.stack),
        secrets,
        secret_name(project.stack.name),
    )


def kubernetes_gaps(project: Project) -> list[Problem]:
    """What `herd export kubernetes` cannot carry over as it is (`herd check --for kubernetes`)."""
    from herdsman.export.gaps import kubernetes_gaps as gaps

    return gaps(project.stack)
