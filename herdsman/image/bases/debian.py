"""Debian bases (`base = "debian:SUITE"` plus `packages`), built by mmdebstrap, reproducibly.

With SOURCE_DATE_EPOCH set, `mmdebstrap --variant=apt --format=tar` writes byte-identical
tarballs for the same archive state (checked: two runs, one sha256). `--skip=output/dev` leaves
device nodes out: images carry none, and unpacking refuses them. The result is pinned in herd.lock
by its manifest digest plus the exact package versions; a later bake reuses the stored base at
once, and on a fresh machine rebuilds it and insists on the same digest — if the Debian archive
moved on, the bake stops and says to accept the new base with `herd bake --refresh`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from herdsman.errors import BakeError
from herdsman.image.bases import BaseImage, BaseRequest
from herdsman.image.bases.oci_dir import machine_platform
from herdsman.image.oci import MEDIA_CONFIG, MEDIA_MANIFEST, REF_NAME, Descriptor, ImageStore
from herdsman.image.tarball import compress_tar, source_date_epoch

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def mmdebstrap_argv(suite: str, packages: tuple[str, ...], output: Path) -> list[str]:
    """The mmdebstrap command (pure, so tests can read it)."""
    argv = ["mmdebstrap", "--variant=apt", "--format=tar", "--skip=output/dev", "--quiet"]
    if packages:
        argv.append("--include=" + ",".join(sorted(packages)))
    return [*argv, suite, str(output)]


def ref_name(suite: str, packages: tuple[str, ...]) -> str:
    key = hashlib.sha256(",".join(sorted(packages)).encode()).hexdigest()[:12]
    return f"base/debian:{suite}+{key}"


def _stored(store: ImageStore, digest: str) -> BaseImage | None:
    if not store.has_blob(digest):
        return None
    manifest = store.manifest(digest)
    layers = tuple(Descriptor.from_json(layer) for layer in manifest["layers"])
    if not all(store.has_blob(layer.digest) for layer in layers):
        return None
    config = store.read_json(manifest["config"]["digest"])
    return BaseImage(
        name="", layers=layers, diff_ids=tuple(config["rootfs"]["diff_ids"]), config=config, digest=digest
    )


def _package_versions(rootfs_tar: Path) -> dict[str, str]:
    with tarfile.open(rootfs_tar) as tar:
        member = next((m for m in tar if m.name.lstrip("./") == "var/lib/dpkg/status"), None)
        handle = tar.extractfile(member) if member is not None else None
        text = handle.read().decode(errors="replace") if handle is not None else ""
    versions: dict[str, str] = {}
    for stanza in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " ")
        if "Package" in fields and "Version" in fields:
            versions[fields["Package"]] = fields["Version"]
    return dict(sorted(versions.items()))


def _build(request: BaseRequest, suite: str) -> tuple[BaseImage, dict[str, str]]:
    if shutil.which("mmdebstrap") is None:
        raise BakeError(
            f"the base {request.name} needs mmdebstrap, which is not installed",
            hint='apt-get install mmdebstrap (or use base = "host")',
        )
    store = request.store
    with tempfile.TemporaryDirectory(dir=store.root, prefix="tmp-debian-") as tmp:
        output = Path(tmp) / "rootfs.tar"
        log = Path(tmp) / "mmdebstrap.log"
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(source_date_epoch())}
        argv = mmdebstrap_argv(suite, request.packages, output)
        with request.reporter.task(f"building {request.name} with mmdebstrap"), log.open("wb") as out:
            result = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-10:])
            raise BakeError(f"mmdebstrap failed to build {request.name}:\n{tail}", hint=" ".join(argv))
        versions = _package_versions(output)
        size = output.stat().st_size
        with request.reporter.task(f"compressing {request.name}", total=size) as task:
            layer = compress_tar(store, output, on_bytes=task.advance)
    config: dict[str, Any] = {
        "architecture": machine_platform(),
        "os": "linux",
        "config": {"Env": [DEFAULT_PATH]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        "history": [{"created_by": "herd: " + " ".join(argv[:-1])}],
    }
    config_desc = store.write_json(config, MEDIA_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config_desc.to_json(),
        "layers": [layer.descriptor.to_json()],
    }
    stored = store.write_json(manifest, MEDIA_MANIFEST)
    ref = {REF_NAME: ref_name(suite, request.packages)}
    store.add_to_index(Descriptor(MEDIA_MANIFEST, stored.digest, stored.size, ref))
    image = BaseImage(
        name=request.name,
        layers=(layer.descriptor,),
        diff_ids=(layer.diff_id,),
        config=config,
        digest=stored.digest,
    )
    return image, versions


def resolve_debian(request: BaseRequest, suite: str) -> BaseImage:
    pinned = request.pinned or {}
    packages = sorted(request.packages)
    if pinned.get("digest") and not request.refresh:
        found = _stored(request.store, str(pinned["digest"]))
        if found is not None:  # the pinned base is here: no mmdebstrap at all
            return BaseImage(
                request.name, found.layers, found.diff_ids, found.config, found.digest, dict(pinned)
            )
        request.reporter.note(f"{request.name} is pinned but not in the store: rebuilding it")
    elif not request.refresh:
        for entry in request.store.index():
            if entry.annotations.get(REF_NAME) == ref_name(suite, request.packages):
                found = _stored(request.store, entry.digest)
                if found is not None:
                    request.reporter.note(f"reusing the stored {request.name}; `--refresh` rebuilds it")
                    reused: dict[str, Any] = {
                        "name": request.name,
                        "packages": packages,
                        "digest": entry.digest,
                    }
                    reused["diff_id"] = found.diff_ids[0]
                    return BaseImage(
                        request.name, found.layers, found.diff_ids, found.config, found.digest, reused
                    )
    image, versions = _build(request, suite)
    if pinned.get("digest") and not request.refresh and pinned["digest"] != image.digest:
        raise BakeError(
            f"the Debian archive changed since herd.lock pinned {request.name} "
            f"({str(pinned['digest'])[:19]}, rebuilt as {image.digest[:19]})",
            hint="run `herd bake --refresh` to accept the newest packages",
        )
    pin: dict[str, Any] = {
        "name": request.name,
        "packages": packages,
        "digest": image.digest,
        "diff_id": image.diff_ids[0],
        "versions": versions,
    }
    return BaseImage(request.name, image.layers, image.diff_ids, image.config, image.digest, pin)
