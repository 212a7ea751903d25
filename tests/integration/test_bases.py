"""Base providers for real: an OCI layout directory, `docker save` archives, Debian via mmdebstrap."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import httpx
import pytest

from herdsman.errors import BakeError
from herdsman.image.bake import bake, image_store
from herdsman.image.bases import BaseRequest, resolve_base
from herdsman.image.bases.debian import mmdebstrap_argv
from herdsman.image.export import export_image
from herdsman.image.oci import ImageStore
from herdsman.image.progress import NullReporter
from herdsman.image.unpack import unpack_image
from herdsman.spec import load_project
from tests.conftest import need_command
from tests.helpers import HELLO, write_project

SCRATCH_TOML = """
[stack]
name = "base"

[service.app]
command = ["/bin/app"]

[service.app.image]
base = "scratch"
copy = [{ src = "files", dest = "/" }]
"""


def _baked(tmp_path: Path) -> tuple[Path, str]:
    file = write_project(tmp_path / "src", SCRATCH_TOML, {"files/etc/motd": "hello from the base\n"})
    return file.parent / ".herd" / "images", bake(load_project(file))[0].image.digest


def _request(
    root: Path, name: str, store: ImageStore, pinned: dict | None = None, refresh: bool = False
) -> BaseRequest:  # type: ignore[type-arg]
    return BaseRequest(name, (), root, store, pinned, refresh, NullReporter())


def test_oci_layout_base_is_copied_byte_for_byte(tmp_path: Path) -> None:
    layout, digest = _baked(tmp_path)
    store = ImageStore(tmp_path / "other")
    base = resolve_base(_request(tmp_path, f"oci:{layout}#{digest}", store))
    assert base.digest == digest and base.pin == {"name": f"oci:{layout}#{digest}", "digest": digest}
    source = ImageStore(layout)
    for blob in [digest, source.manifest(digest)["config"]["digest"], *[d.digest for d in base.layers]]:
        assert store.read_blob(blob) == source.read_blob(blob)
    assert base.config["rootfs"]["diff_ids"] == list(base.diff_ids)
    with pytest.raises(BakeError, match=r"herd\.lock pinned"):
        resolve_base(
            _request(
                tmp_path,
                f"oci:{layout}#{digest}",
                ImageStore(tmp_path / "x"),
                {"digest": "sha256:" + "0" * 64},
            )
        )
    with pytest.raises(BakeError, match="no image 'nope'"):
        resolve_base(_request(tmp_path, f"oci:{layout}#nope", store))


def test_tampered_oci_blob_is_refused(tmp_path: Path) -> None:
    layout, digest = _baked(tmp_path)
    layer = ImageStore(layout).manifest(digest)["layers"][0]["digest"]
    blob = layout / "blobs" / "sha256" / layer[7:]
    os.chmod(blob, 0o644)
    blob.write_bytes(blob.read_bytes() + b"x")
    with pytest.raises(BakeError, match="digest mismatch"):
        resolve_base(_request(tmp_path, f"oci:{layout}#{digest}", ImageStore(tmp_path / "other")))


def test_hand_made_docker_archive_with_uncompressed_layers(tmp_path: Path) -> None:
    layout, digest = _baked(tmp_path)
    source = ImageStore(layout)
    manifest = source.manifest(digest)
    import gzip

    raw_layer = gzip.decompress(source.read_blob(manifest["layers"][0]["digest"]))
    config = source.read_blob(manifest["config"]["digest"])
    archive = tmp_path / "saved.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in [
            (
                "manifest.json",
                json.dumps(
                    [{"Config": "cfg.json", "RepoTags": ["base:1"], "Layers": ["l1/layer.tar"]}]
                ).encode(),
            ),
            ("cfg.json", config),
            ("l1/layer.tar", raw_layer),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, __import__("io").BytesIO(data))
    store = ImageStore(tmp_path / "other")
    base = resolve_base(_request(tmp_path, "docker-archive:saved.tar#base:1", store))
    assert base.layers[0].media_type.endswith(".tar") and base.layers[0].digest == base.diff_ids[0]
    assert base.pin["config"] == manifest["config"]["digest"]
    unpack_image(store, base.digest, tmp_path / "rootfs")
    assert (tmp_path / "rootfs" / "etc" / "motd").read_text() == "hello from the base\n"
    with pytest.raises(BakeError, match="no image tagged 'other:2'"):
        resolve_base(_request(tmp_path, "docker-archive:saved.tar#other:2", store))


def test_real_docker_save_archive(tmp_path: Path, docker_engine: None) -> None:
    layout, digest = _baked(tmp_path)
    export_image(ImageStore(layout), digest, tmp_path / "export.tar", fmt="docker", tag="herd-test/base:save")
    subprocess.run(["docker", "load", "-i", str(tmp_path / "export.tar")], check=True, capture_output=True)
    try:
        subprocess.run(
            ["docker", "save", "-o", str(tmp_path / "saved.tar"), "herd-test/base:save"], check=True
        )
    finally:
        subprocess.run(["docker", "rmi", "-f", "herd-test/base:save"], capture_output=True)
    store = ImageStore(tmp_path / "other")
    base = resolve_base(_request(tmp_path, "docker-archive:saved.tar", store))
    assert base.pin["config"] == ImageStore(layout).manifest(digest)["config"]["digest"], (
        "image ID = config digest"
    )
    unpack_image(store, base.digest, tmp_path / "rootfs")
    assert (tmp_path / "rootfs" / "etc" / "motd").exists()


def test_mmdebstrap_command() -> None:
    argv = mmdebstrap_argv("bookworm", ("python3-minimal", "ca-certificates"), Path("/out.tar"))
    assert argv[:4] == ["mmdebstrap", "--variant=apt", "--format=tar", "--skip=output/dev"]
    assert "--include=ca-certificates,python3-minimal" in argv and argv[-2:] == ["bookworm", "/out.tar"]


@pytest.mark.slow
def test_debian_base_hello_bakes_runs_in_docker_and_is_pinned(tmp_path: Path, docker_engine: None) -> None:
    need_command("mmdebstrap")
    root = tmp_path / "hello"
    shutil.copytree(HELLO, root, ignore=shutil.ignore_patterns(".herd", "herd.lock", "__pycache__"))
    toml = (
        (root / "herd.toml")
        .read_text()
        .replace('base = "host"', 'base = "debian:bookworm"\npackages = ["python3"]')
    )
    (root / "herd.toml").write_text(toml)
    project = load_project(root / "herd.toml")
    result = bake(project)[0]
    lock = (root / "herd.lock").read_text()
    assert 'name = "debian:bookworm"' in lock and "python3-minimal" in lock and "versions" in lock

    # pinned and stored: the next bake does not run mmdebstrap at all
    path = os.environ["PATH"]
    try:
        os.environ["PATH"] = "/nonexistent"
        assert bake(load_project(root / "herd.toml"))[0].image.digest == result.image.digest
    finally:
        os.environ["PATH"] = path

    export_image(
        image_store(project),
        result.image.digest,
        tmp_path / "hello.tar",
        fmt="docker",
        tag="herd-test/hello:debian",
    )
    subprocess.run(["docker", "load", "-i", str(tmp_path / "hello.tar")], check=True, capture_output=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    name = f"herd-test-hello-{port}"
    try:
        subprocess.run(
            [
                "docker",
                "run",
                "-d",
                "--rm",
                "--name",
                name,
                "--read-only",
                "--network",
                "host",
                "--tmpfs",
                "/data",
                "-e",
                f"PORT={port}",
                "herd-test/hello:debian",
            ],
            check=True,
            capture_output=True,
        )
        body = ""
        for _ in range(100):
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/", timeout=1).text
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert "visit number" in body
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", "herd-test/hello:debian"], capture_output=True)


@pytest.mark.slow
def test_two_debian_builds_give_one_digest(tmp_path: Path) -> None:
    need_command("mmdebstrap")
    digests = []
    for name in ("one", "two"):
        store = ImageStore(tmp_path / name)
        request = BaseRequest("debian:bookworm", (), tmp_path, store, None, False, NullReporter())
        digests.append(resolve_base(request).digest)
    assert digests[0] == digests[1]


# --- hostile base archives are refused when they enter the store, before anything is baked -----------


def _layer_tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    import io

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return raw.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = b"x", **attrs: object):  # type: ignore[no-untyped-def]
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    if kind == tarfile.REGTYPE:
        info.size = len(data or b"")
    else:
        data = None
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def _docker_archive(path: Path, layers: list[bytes]) -> Path:
    """A `docker save` tarball with these uncompressed layers."""
    import hashlib
    import io

    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    ).encode()
    names = [f"l{i}/layer.tar" for i in range(len(layers))]
    manifest = json.dumps([{"Config": "cfg.json", "RepoTags": ["evil:1"], "Layers": names}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in [
            ("manifest.json", manifest),
            ("cfg.json", config),
            *zip(names, layers, strict=True),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


HOSTILE = {
    # id: (members of the hostile layer, the member named, why)
    "dotdot": ([_member("../../evil")], "../../evil", "'..'"),
    "absolute": ([_member("/etc/cron.d/evil")], "/etc/cron.d/evil", "absolute path"),
    "device": (
        [_member("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0)],
        "dev/sda",
        "device nodes are not allowed",
    ),
    "hardlink-outside": ([_member("x", tarfile.LNKTYPE, linkname="/etc/shadow")], "x", "absolute path"),
    "hardlink-dotdot": ([_member("x", tarfile.LNKTYPE, linkname="../../etc/shadow")], "x", "'..'"),
    "huge-name": ([_member("n" * 5000)], "n" * 80, "at most 4096"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_docker_archive_is_refused_at_bake_with_one_line(tmp_path: Path, case: str) -> None:
    members, member, why = HOSTILE[case]
    good = _layer_tar([_member("etc", tarfile.DIRTYPE), _member("etc/motd")])
    file = write_project(
        tmp_path / "p",
        SCRATCH_TOML.replace('base = "scratch"', 'base = "docker-archive:evil.tar"'),
        {"files/bin/app": "#!/bin/sh\n"},
    )
    _docker_archive(file.parent / "evil.tar", [good, _layer_tar(members)])
    with pytest.raises(BakeError) as err:
        bake(load_project(file))
    message = str(err.value)
    assert message.startswith("refusing docker-archive:evil.tar, layer 2 of 2: member ")
    assert repr(member)[: len(member) + 1] in message and why in message
    assert "\n" not in message and len(message) < 300
    store = image_store(load_project(file))
    assert store.index() == []  # nothing recorded, nothing baked from it
    assert not list(file.parent.joinpath(".herd").glob(".check-*"))  # the scratch directory is gone
    assert not (file.parent / "herd.lock").exists()


def test_a_hostile_oci_layout_is_refused_and_a_good_one_checked_once(tmp_path: Path) -> None:
    layout, digest = _baked(tmp_path)
    store = ImageStore(tmp_path / "other")
    resolve_base(_request(tmp_path, f"oci:{layout}#{digest}", store))
    assert len(list((tmp_path / "cache" / "checked").iterdir())) == 1  # remembered: not checked again
    source = ImageStore(layout)
    evil = source.write_blob(_layer_tar([_member("../escape")]), "application/vnd.oci.image.layer.v1.tar")
    manifest = source.manifest(digest)
    config = source.read_json(manifest["config"]["digest"])
    config["rootfs"]["diff_ids"].append(evil.digest)
    config_desc = source.write_json(config, manifest["config"]["mediaType"])
    manifest["config"] = config_desc.to_json()
    manifest["layers"].append(evil.to_json())
    written = source.write_json(manifest, manifest["mediaType"])
    source.add_to_index(written)
    bad = written.digest
    with pytest.raises(BakeError, match=r"layer 2 of 2: member '\.\./escape' has a '\.\.' component"):
        resolve_base(_request(tmp_path, f"oci:{layout}#{bad}", store))
    assert [d.digest for d in store.index()] == [digest]


def test_absolute_and_dotdot_symlinks_in_a_base_resolve_inside_it(tmp_path: Path) -> None:
    """`lib -> /usr/lib` (and `..` links) are fine: they mean the image's own /usr/lib, as in a chroot."""
    lower = _layer_tar(
        [
            _member("usr", tarfile.DIRTYPE),
            _member("usr/lib", tarfile.DIRTYPE),
            _member("usr/lib/libc.so", data=b"elf"),
            _member("lib", tarfile.SYMTYPE, linkname="/usr/lib"),
            _member("usr/share", tarfile.DIRTYPE),
            _member("usr/share/up", tarfile.SYMTYPE, linkname="../../../../../usr/lib"),
        ]
    )
    upper = _layer_tar([_member("lib/extra.so", data=b"more"), _member("usr/share/up/third.so", data=b"3")])
    _docker_archive(tmp_path / "base.tar", [lower, upper])
    store = ImageStore(tmp_path / "store")
    base = resolve_base(_request(tmp_path, "docker-archive:base.tar", store))
    unpack_image(store, base.digest, tmp_path / "rootfs")
    root = tmp_path / "rootfs"
    assert os.readlink(root / "lib") == "/usr/lib"
    assert os.readlink(root / "usr" / "share" / "up") == "../../../../../usr/lib"
    assert sorted(os.listdir(root / "usr" / "lib")) == ["extra.so", "libc.so", "third.so"]
    assert not (tmp_path / "usr").exists()
