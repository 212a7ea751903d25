"""Where an export's input comes from: the release in the state store, the images' users from the
local image store, and the registry that must hold every image (a cluster pulls; it cannot read
`.herd/images`). The effectful half of `herd export kubernetes`; `kubernetes` is the pure half.
"""

from __future__ import annotations

from herdsman.errors import HerdError
from herdsman.export.kubernetes import ExportSource, image_reference
from herdsman.image.bake import image_store
from herdsman.image.registry import ACCEPT, Registry, parse_reference
from herdsman.spec import Project, herd_home
from herdsman.state import Release, StateStore


def release_to_export(project: Project, env: str, number: int | None = None) -> Release:
    """Release ``number`` of ``env``, or the one serving now."""
    path = herd_home(project) / "state.db"
    if not path.exists():
        raise HerdError(f"nothing was ever deployed from {project.file}", hint="run `herd deploy` first")
    state = StateStore(path)
    try:
        if number is not None:
            return state.release(env, number)
        release = state.current_release(env)
    finally:
        state.close()
    if release is None:
        raise HerdError(
            f"environment {env!r} has no deployed release to export",
            hint="run `herd deploy` (or pass --release N; `herd releases` lists them)",
        )
    return release


def registry_of(project: Project, env: str, chosen: str | None) -> str:
    """`--registry`, else `[environment.ENV] registry`, else an error: a cluster pulls images."""
    environment = project.stack.environment.get(env)
    registry = chosen or (environment.registry if environment else None)
    if not registry:
        raise HerdError(
            f"environment {env!r} has no registry: a cluster pulls its images from one",
            file=str(project.file),
            key=f"environment.{env}.registry",
            hint=f'set registry = "REGISTRY/PREFIX" under [environment.{env}] and `herd deploy` '
            "(it pushes every image there), or `herd push SERVICE REGISTRY/PREFIX/SERVICE` and "
            "pass --registry REGISTRY/PREFIX",
        )
    registry = registry.rstrip("/")
    try:
        parse_reference(f"{registry}/image")
    except HerdError as exc:
        raise HerdError(
            f"{registry!r} is not a registry and prefix: {exc.message}",
            hint="give REGISTRY/PREFIX, such as 127.0.0.1:5000/hello",
        ) from None
    return registry


def check_pushed(release: Release, registry: str) -> None:
    """Every image of the release is in the registry, by digest (one HEAD request each)."""
    missing = []
    for name, entry in sorted(release.services().items()):
        reference = parse_reference(image_reference(registry, name, entry.image))
        with Registry(reference.registry) as client:
            response = client.request(
                "HEAD", f"/v2/{reference.name}/manifests/{entry.image}", headers={"Accept": ACCEPT}
            )
        if response.status_code == 404:
            missing.append((name, reference, entry.image))
        elif response.status_code >= 400:
            raise HerdError(
                f"the registry {reference.registry} answered {response.status_code} for {reference}",
                hint="check HERD_REGISTRY_USERNAME / HERD_REGISTRY_PASSWORD, or pass --no-check-registry",
            )
    if missing:
        names = ", ".join(f"{name} ({str(ref).split('@')[0]})" for name, ref, _ in missing)
        pushes = "; ".join(f"herd push {digest} {str(ref).split('@')[0]}" for _, ref, digest in missing)
        raise HerdError(
            f"release {release.number} has images the registry lacks: {names}",
            hint=f"push them first: {pushes}",
        )


def image_users(project: Project, release: Release) -> dict[str, str]:
    """The user each image runs as, from its config in the local store (when it is still there)."""
    store = image_store(project)
    users = {}
    for name, entry in release.services().items():
        try:
            config = store.config(entry.image)
        except (HerdError, OSError, KeyError, ValueError):
            continue
        users[name] = str((config.get("config") or {}).get("User") or "")
    return users


def export_source(
    project: Project,
    env: str,
    *,
    number: int | None = None,
    registry: str | None = None,
    check_registry: bool = True,
    volume_size: str = "1Gi",
    pull_secret: str | None = None,
) -> ExportSource:
    release = release_to_export(project, env, number)
    where = registry_of(project, env, registry)
    if check_registry:
        check_pushed(release, where)
    return ExportSource(
        stack=project.stack,
        env=env,
        release=release.number,
        services=release.services(),
        registry=where,
        image_users=image_users(project, release),
        volume_size=volume_size,
        pull_secret=pull_secret,
    )
