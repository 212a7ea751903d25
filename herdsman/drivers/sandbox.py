"""Pure builders of how a process-driver instance is launched: bubblewrap argv, or the plain fallback.

With bubblewrap the instance gets a read-only root, a private /tmp (a scratch directory of its own,
so that what it wrote can be kept when it is quarantined), its volumes bound read-write and nothing
else writable. Two kinds of image:

- a full root file system (debian, scratch, oci bases): the unpacked image *is* the root;
- a `host` image: the host's system directories, read-only, with the image's own top-level
  directories (/app, /opt/herd/python...) bound over them at their image paths.

No `--die-with-parent`: an instance must outlive the agent that started it (DESIGN.md principle 3).
No `--new-session` either: the driver starts bwrap in a session of its own, without a terminal, and
stops an instance by signalling that session's process group.
Without bubblewrap only host images can run, as plain processes: the working directory and any
environment value naming an image path or a volume target are rewritten to the host paths.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from herdsman.drivers.base import InstanceSpec
from herdsman.errors import DriverError

SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]
    cwd: str


def host_layout(host_root: Path = Path("/")) -> list[tuple[str, str]]:
    """How the host's system directories appear: ("bind", "usr") or ("symlink:usr/bin", "bin")."""
    layout: list[tuple[str, str]] = []
    for name in SYSTEM_DIRS:
        path = host_root / name
        if path.is_symlink():
            layout.append((f"symlink:{os.readlink(path)}", name))
        elif path.is_dir():
            layout.append(("bind", name))
    return layout


def extra_roots(paths: Sequence[str]) -> list[str]:
    """Host directories to expose for PATH entries outside the system directories, e.g. the
    interpreter of a pyenv install (/root/.pyenv/shims -> /root/.pyenv)."""
    roots: list[str] = []
    for entry in paths:
        parts = Path(entry).parts
        if len(parts) < 2 or not entry.startswith("/") or parts[1] in SYSTEM_DIRS:
            continue
        root = "/" + "/".join(parts[1:3])
        if root not in roots and Path(root).is_dir():
            roots.append(root)
    return roots


def bwrap_launch(
    bwrap: str,
    spec: InstanceSpec,
    rootfs: Path,
    *,
    host_image: bool,
    env: Mapping[str, str],
    layout: list[tuple[str, str]],
    scratch: Path | None = None,
) -> Launch:
    argv = [bwrap]
    if host_image:
        image_dirs = sorted(p.name for p in rootfs.iterdir()) if rootfs.is_dir() else []
        clash = [d for d in image_dirs if d in SYSTEM_DIRS]
        if clash:
            raise DriverError(
                f"a host image cannot hold /{clash[0]}: it would hide the host's own",
                hint="put the app under /app and Python packages under /opt (image.python_path)",
            )
        for how, name in layout:
            if how == "bind":
                argv += ["--ro-bind", f"/{name}", f"/{name}"]
            else:
                argv += ["--symlink", how.removeprefix("symlink:"), f"/{name}"]
        for root in extra_roots(env.get("PATH", "").split(":")):
            if root.strip("/").split("/")[0] not in image_dirs:
                argv += ["--ro-bind", root, root]
        for name in image_dirs:
            argv += ["--ro-bind", str(rootfs / name), f"/{name}"]
    else:
        argv += ["--ro-bind", str(rootfs), "/"]
    # /tmp is the instance's only writable place besides its volumes: a directory of its own on
    # the host (kept as evidence when the instance is quarantined), or a tmpfs.
    argv += ["--bind", str(scratch), "/tmp"] if scratch is not None else ["--tmpfs", "/tmp"]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    for volume in spec.volumes:
        argv += ["--bind", str(volume.source), volume.target]
    argv += ["--remount-ro", "/", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    argv += ["--chdir", spec.workdir or "/", "--"]
    argv += list(spec.argv)
    return Launch(argv, dict(env), "/")


def plain_launch(
    spec: InstanceSpec, rootfs: Path, *, env: Mapping[str, str], scratch: Path | None = None
) -> Launch:
    """A host image as a plain process: image paths and volume targets mapped to host paths;
    TMPDIR points at the instance's scratch directory."""
    mapping = {f"/{p.name}": str(rootfs / p.name) for p in rootfs.iterdir()} if rootfs.is_dir() else {}
    mapping.update({v.target: str(v.source) for v in spec.volumes})

    def rewrite(value: str) -> str:
        parts = []
        for item in value.split(":"):
            for target, source in sorted(mapping.items(), key=lambda kv: -len(kv[0])):
                if item == target or item.startswith(target + "/"):
                    item = source + item[len(target) :]
                    break
            parts.append(item)
        return ":".join(parts)

    new_env = {key: rewrite(value) for key, value in env.items()}
    if scratch is not None:
        new_env["TMPDIR"] = str(scratch)
    return Launch(list(spec.argv), new_env, rewrite(spec.workdir or "/"))
