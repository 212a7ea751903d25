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
