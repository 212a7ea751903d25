"""What a container of a Docker engine shows about itself, for the drivers that run containers
(`docker`, `swarm`): how it drifted from its release and image, and what a quarantine keeps of it.

One set of rules for both, so an instance drifts (or not) for the same reasons whichever of the
two started it: image, command and environment against the release (`launch_drifts`), and `docker
diff` against a read-only root, where only mount points and what the engine mounts may appear.
"""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from herdsman.drivers.base import Drift, Drifts, launch_drifts
from herdsman.image.filelist import Difference

# what the engine itself mounts into every container (init, name resolution, Swarm's secrets): not drift
ENGINE_MOUNTS = (
    "/usr/sbin/docker-init",
    "/sbin/docker-init",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
)


def container_drifts(
    container: Any,
    expected_image: str,
    expected_argv: Sequence[str],
    expected_env: Mapping[str, str],
    secrets: tuple[str, ...],
    mounts: Sequence[str],
    *,
    argv_skip: int = 0,
    env_known: Mapping[str, str] | None = None,
) -> Drifts:
    """The running ``container`` against what its release says (``expected_*``) and its image.
    ``argv_skip``: how many leading words of the container's command are the driver's own (a
    wrapper); ``env_known``: values the container's environment gets some other way (Swarm
    secrets), taken as what they are."""
    config = container.attrs.get("Config") or {}
    argv = (list(config.get("Entrypoint") or []) + list(config.get("Cmd") or []))[argv_skip:]
    env = dict(str(item).partition("=")[::2] for item in config.get("Env") or [])
    env.update(env_known or {})
    drifts = launch_drifts(
        (str(container.attrs.get("Image")), expected_image),
        (argv, expected_argv),
        (env, expected_env),
        secrets,
    )
    covered = {"/tmp", *mounts, *ENGINE_MOUNTS}
    changes = [
        c
        for c in container.diff() or []
        if not any(under(str(c["Path"]), m) for m in covered | {"/dev", "/proc", "/sys"})
    ]
    # with a read-only root, only the parents of mount points can show up (as changed dirs)
    changes = [c for c in changes if not any(under(m, str(c["Path"])) for m in covered)]
    if changes:
        kinds = {0: "modified", 1: "added", 2: "removed"}
        differences = tuple(
            Difference(str(c["Path"]).lstrip("/"), kinds.get(int(c["Kind"]), "modified")) for c in changes
        )
        shown = ", ".join(f"/{d.path} ({d.kind})" for d in differences[:5])
        drifts.append(
            Drift("file system", f"{len(differences)} path(s) differ from the image: {shown}", differences)
        )
    return drifts


def keep_container(container: Any, keep: Path) -> None:
    """What the container wrote: its /tmp (a tmpfs, gone once stopped) and `docker diff`."""
    keep.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(Exception):  # the diff is a bonus; the /tmp copy matters more
        (keep.parent / "docker-diff.json").write_text(json.dumps(container.diff() or [], indent=1))
    if container.status != "running":
        return
    # /tmp is a tmpfs, which `docker cp` (get_archive) cannot see: ask the container's own tar
    import docker.errors

    try:
        code, (out, err) = container.exec_run(["tar", "-cf", "-", "-C", "/tmp", "."], demux=True)
    except docker.errors.APIError as exc:  # it stopped meanwhile: its tmpfs is gone
        (keep / ".not-kept").write_text(f"the container's /tmp could not be copied: {exc}\n")
        return
    if code != 0:
        reason = (err or b"").decode(errors="replace").strip() or f"exit {code}"
        (keep / ".not-kept").write_text(f"the container's /tmp could not be copied: {reason}\n")
        return
    with tarfile.open(fileobj=io.BytesIO(out or b"")) as tar:
        members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]
        tar.extractall(keep, members=members, filter="data")


def under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")
