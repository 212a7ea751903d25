"""Exporting images: the archive's layout and reproducibility, errors, the CLI, and a real `docker load`."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import struct
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx
import pytest

from herdsman.errors import BakeError
from herdsman.image.bake import bake, image_store
from herdsman.image.export import export_image
from herdsman.image.oci import REF_NAME, ImageStore
from herdsman.spec import load_project
from tests.conftest import need, need_command
from tests.helpers import write_project

SMALL_TOML = """
[stack]
name = "exp"

[service.web]
command = ["/bin/true"]

[service.web.image]
base = "scratch"
copy = [{ src = "root", dest = "/" }]
workdir = "/"
"""

SMALL_FILES = {"root/www/index.html": "<h1>exported</h1>\n", "root/etc/motd": "hello\n"}
TAG = "exp/web:0123456789ab"


def _baked(tmp_path: Path) -> tuple[ImageStore, str, Path]:
    file = write_project(tmp_path / "project", SMALL_TOML, dict(SMALL_FILES))
    project = load_project(file)
    result = bake(project)[0]
    return image_store(project), result.image.digest, file


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()}  # type: ignore[union-attr]


def _hex(digest: str) -> str:
    return digest.removeprefix("sha256:")


# the archive, without an engine ----------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_archive_members_and_index(tmp_path: Path, fmt: str) -> None:
    store, digest, _ = _baked(tmp_path)
    manifest = store.manifest(digest)
    out = tmp_path / f"{fmt}.tar"
    export_image(store, digest, out, fmt=fmt, tag=TAG)

    with tarfile.open(out) as tar:
        infos = tar.getmembers()
    names = [m.name for m in infos]
    blobs = sorted(
        _hex(d) for d in [digest, manifest["config"]["digest"], *(la["digest"] for la in manifest["layers"])]
    )
    expected = ["blobs", "blobs/sha256", *(f"blobs/sha256/{h}" for h in blobs), "index.json"]
    expected += ["manifest.json", "oci-layout"] if fmt == "docker" else ["oci-layout"]
    assert names == expected
    for info in infos:
        assert (info.mtime, info.uid, info.gid, info.uname, info.gname) == (0, 0, 0, "", "")
        assert info.mode == (0o755 if info.isdir() else 0o644)
        assert not info.pax_headers

    members = _members(out)
    assert json.loads(members["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(members["index.json"])
    (entry,) = index["manifests"]
    assert entry["digest"] == digest
    assert entry["size"] == len(members[f"blobs/sha256/{_hex(digest)}"])
    assert entry["annotations"] == {REF_NAME: TAG}
    assert members[f"blobs/sha256/{_hex(digest)}"] == store.read_blob(digest), "manifest bytes as stored"
    config_digest = manifest["config"]["digest"]
    assert members[f"blobs/sha256/{_hex(config_digest)}"] == store.read_blob(config_digest)
    for name, data in members.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]


def test_docker_manifest_points_at_the_blobs(tmp_path: Path) -> None:
    store, digest, _ = _baked(tmp_path)
    manifest = store.manifest(digest)
    out = tmp_path / "web.tar"
    export_image(store, digest, out, tag=TAG)
    members = _members(out)
    (entry,) = json.loads(members["manifest.json"])
    assert entry["RepoTags"] == [TAG]
    assert entry["Config"] == f"blobs/sha256/{_hex(manifest['config']['digest'])}"
    assert entry["Layers"] == [f"blobs/sha256/{_hex(la['digest'])}" for la in manifest["layers"]]
    for name in [entry["Config"], *entry["Layers"]]:
        assert name in members
    with tarfile.open(fileobj=io.BytesIO(members[entry["Layers"][0]])) as layer:  # gzip, as stored
        assert "www/index.html" in layer.getnames()

    export_image(store, digest, out)  # without a tag: no RepoTags, no ref name
    members = _members(out)
    assert "RepoTags" not in json.loads(members["manifest.json"])[0]
    assert "annotations" not in json.loads(members["index.json"])["manifests"][0]


def test_two_exports_are_byte_identical(tmp_path: Path) -> None:
    store, digest, _ = _baked(tmp_path)
    for fmt in ("docker", "oci"):
        one, two = tmp_path / f"one-{fmt}.tar", tmp_path / "sub" / f"two-{fmt}.tar"
        two.parent.mkdir(exist_ok=True)
        export_image(store, digest, one, fmt=fmt, tag=TAG)
        time.sleep(0.01)
        export_image(store, digest, two, fmt=fmt, tag=TAG)
        assert one.read_bytes() == two.read_bytes()
        assert oct(one.stat().st_mode & 0o777) == oct(0o644)


def test_export_replaces_the_output_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store, digest, _ = _baked(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "web.tar"
    out.write_bytes(b"old")
    export_image(store, digest, out, tag=TAG)
    assert tarfile.is_tarfile(out)
    assert os.listdir(out_dir) == ["web.tar"]


def test_missing_blob_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    store, digest, _ = _baked(tmp_path)
    layer = store.manifest(digest)["layers"][0]["digest"]
    store.blob_path(layer).unlink()
    out = tmp_path / "web.tar"
    with pytest.raises(BakeError, match=r"layer blob sha256:\w+ of image .* is missing") as info:
        export_image(store, digest, out, tag=TAG)
    assert "herd bake" in info.value.hint
    assert list(tmp_path.glob("*.tar")) == [] and list(tmp_path.glob(".web.tar*")) == []
    with pytest.raises(BakeError, match="missing") as info:
        export_image(store, "sha256:" + "0" * 64, out)
    assert info.value.hint


def test_damaged_blob_is_caught_while_streaming(tmp_path: Path) -> None:
    store, digest, _ = _baked(tmp_path)
    path = store.blob_path(store.manifest(digest)["layers"][0]["digest"])
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    out = tmp_path / "web.tar"
    with pytest.raises(BakeError, match="damaged"):
        export_image(store, digest, out)
    assert not out.exists() and list(tmp_path.glob(".web.tar*")) == []


def test_unwritable_output_and_bad_arguments(tmp_path: Path) -> None:
    store, digest, _ = _baked(tmp_path)
    with pytest.raises(BakeError, match="cannot write") as info:
        export_image(store, digest, tmp_path / "no" / "such" / "dir" / "web.tar")
    assert info.value.hint
    with pytest.raises(BakeError, match="is a directory") as info:
        export_image(store, digest, tmp_path)
    assert "-o" in info.value.hint
    with pytest.raises(BakeError, match="format"):
        export_image(store, digest, tmp_path / "x.tar", fmt="zip")
    for bad in ("Hello/Web:1", "hello/web", "hello/web-:1", "hello/web:bad/tag"):
        with pytest.raises(BakeError, match="not a tag Docker accepts"):
            export_image(store, digest, tmp_path / "x.tar", tag=bad)
    export_image(store, digest, tmp_path / "x.tar", tag="localhost:5000/hello/web:v1")
    export_image(store, digest, tmp_path / "y.tar", fmt="oci", tag="v1")  # OCI ref names are free-form


# the CLI ------------------------------------------------------------------------------------------
def _herd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "herdsman", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_cli_export(tmp_path: Path) -> None:
    _, digest, file = _baked(tmp_path)
    done = _herd("-f", str(file), "image", "export", "web", "-o", "out.tar", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    tag = f"exp/web:{_hex(digest)[:12]}"
    assert tag in done.stdout
    (entry,) = json.loads(_members(tmp_path / "out.tar")["manifest.json"])
    assert entry["RepoTags"] == [tag]

    done = _herd(
        "-f",
        str(file),
        "image",
        "export",
        _hex(digest)[:12],
        "--format",
        "oci",
        "-o",
        "oci.tar",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "manifest.json" not in _members(tmp_path / "oci.tar")


def test_cli_unknown_image_is_a_clear_error(tmp_path: Path) -> None:
    _, _, file = _baked(tmp_path)
    done = _herd("-f", str(file), "image", "export", "nosuchimage", "-o", "out.tar", cwd=tmp_path)
    assert done.returncode != 0
    assert "no image 'nosuchimage'" in done.stderr and "hint:" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out.tar").exists()


# a real Docker engine -----------------------------------------------------------------------------
def _static_elf(path: Path) -> bool:
    """True for a 64-bit little-endian ELF without a program interpreter (PT_INTERP)."""
    data = path.read_bytes()
    if data[:6] != b"\x7fELF\x02\x01":
        return False
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return all(struct.unpack_from("<I", data, phoff + i * phentsize)[0] != 3 for i in range(phnum))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _docker(*args: str, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


@pytest.mark.docker
def test_docker_loads_and_runs_the_exported_image(tmp_path: Path, docker_engine: None) -> None:
    busybox = Path(need_command("busybox")).resolve()
    need(_static_elf(busybox), f"{busybox} is not statically linked (install busybox-static)")
    port = _free_port()
    toml = SMALL_TOML.replace('name = "exp"', 'name = "herd-export-test"').replace(
        'command = ["/bin/true"]',
        f'command = ["/bin/busybox", "httpd", "-f", "-p", "127.0.0.1:{port}", "-h", "/www"]',
    )
    file = write_project(
        tmp_path / "project", toml, {**SMALL_FILES, "root/bin/busybox": busybox.read_bytes()}
    )
    (file.parent / "root" / "bin" / "busybox").chmod(0o755)
    project = load_project(file)
    digest = bake(project)[0].image.digest
    store = image_store(project)
    config_digest = store.manifest(digest)["config"]["digest"]
    tag = f"herd-export-test/web:{_hex(digest)[:12]}"
    archive = tmp_path / "web.tar"
    export_image(store, digest, archive, fmt="docker", tag=tag)

    container = ""
    try:
        assert f"Loaded image: {tag}" in _docker("load", "-i", str(archive))
        assert _docker("image", "inspect", "--format", "{{.Id}}", tag) == config_digest
        container = _docker("run", "-d", "--read-only", "--network", "host", "--rm", tag)
        deadline = time.monotonic() + 15
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    logs = _docker("logs", container, check=False)
                    pytest.fail(f"the container never answered on port {port}; logs: {logs}")
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.text == SMALL_FILES["root/www/index.html"]
    finally:
        if container:
            _docker("rm", "-f", container, check=False)
        _docker("rmi", "-f", tag, check=False)
    assert _docker("images", "-q", tag) == ""
