"""Images through a real registry (Debian's docker-registry on 127.0.0.1): push skips what is there,
pull by digest verifies every blob and refuses a tampered one, a registry base is fetched by digest
or by a tag pinned in herd.lock, and basic and token auth work."""

from __future__ import annotations

import base64
import datetime
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from herdsman.image.bake import image_store
from herdsman.spec import load_project
from tests.helpers import RunningRegistry, herd, write_project

TOML = """
[stack]
name = "reg"

[service.web]
command = ["/bin/true"]

[service.web.image]
base = "{base}"
copy = [{{ src = "root", dest = "/" }}]
workdir = "/"
"""


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RunningRegistry]:
    running = RunningRegistry(tmp_path / "registry")
    yield running
    running.stop()


def baked(root: Path, base: str = "scratch", text: str = "hello\n") -> Path:
    file = write_project(root, TOML.format(base=base), {"root/www/index.html": text})
    herd(file.parent, "bake")
    return file.parent


def image_digest(project: Path) -> str:
    store = image_store(load_project(project / "herd.toml"))
    return next(
        d.digest
        for d in reversed(store.index())
        if d.annotations.get("org.opencontainers.image.ref.name", "").startswith("reg/web")
    )


def test_push_skips_what_is_there_and_pull_verifies_every_blob(
    tmp_path: Path, registry: RunningRegistry
) -> None:
    project = baked(tmp_path / "a")
    digest = image_digest(project)
    first = herd(project, "push", "web", f"{registry.address}/reg/web:v1")
    assert first.stdout.strip().splitlines()[-1] == f"{registry.address}/reg/web@{digest}"
    assert "pushed 2 blob(s), 0 already there" in first.stdout
    assert (
        "pushed 0 blob(s), 2 already there"
        in herd(project, "push", "web", f"{registry.address}/reg/web:v1").stdout
    )

    other = write_project(tmp_path / "b", TOML.format(base="scratch"), {"root/x": "x"}).parent
    by_tag = herd(other, "pull", f"{registry.address}/reg/web:v1", check=False)
    assert by_tag.returncode == 1 and "pull by digest" in by_tag.stderr
    herd(other, "pull", f"{registry.address}/reg/web@{digest}")
    source, fresh = (
        image_store(load_project(project / "herd.toml")),
        image_store(load_project(other / "herd.toml")),
    )
    manifest = fresh.manifest(digest)
    for blob in [manifest["config"], *manifest["layers"]]:
        assert fresh.blob_path(blob["digest"]).read_bytes() == source.blob_path(blob["digest"]).read_bytes()
    assert fresh.read_blob(digest) == source.read_blob(digest), "the digest is unchanged"
    resolved = herd(other, "pull", "--resolve", f"{registry.address}/reg/web:v1").stdout
    assert digest in resolved


def test_a_tampered_blob_is_refused_and_nothing_is_kept(tmp_path: Path, registry: RunningRegistry) -> None:
    project = baked(tmp_path / "a")
    digest = image_digest(project)
    herd(project, "push", "web", f"{registry.address}/reg/web:v1")
    layer = image_store(load_project(project / "herd.toml")).manifest(digest)["layers"][-1]["digest"]
    blob = registry.blob_file(layer)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    other = write_project(tmp_path / "b", TOML.format(base="scratch"), {"root/x": "x"}).parent
    result = herd(other, "pull", f"{registry.address}/reg/web@{digest}", check=False)
    assert result.returncode == 1 and f"blob {layer} of" in result.stderr and "refused" in result.stderr
    store = image_store(load_project(other / "herd.toml"))
    assert not store.has_blob(layer)
    assert not list((store.root / "tmp").glob("*")), "no partial blob is left"


def test_an_image_with_a_hostile_layer_is_refused_by_pull_and_as_a_base(
    tmp_path: Path, registry: RunningRegistry
) -> None:
    """A registry may serve what no bake of ours made: its layers are checked like a base archive's."""
    import io
    import tarfile

    from herdsman.image.oci import MEDIA_CONFIG, MEDIA_LAYER_TAR, MEDIA_MANIFEST, ImageStore
    from herdsman.image.registry import parse_reference, push

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("../../../etc/cron.d/evil")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    evil_store = ImageStore(tmp_path / "evil" / "images")
    layer = evil_store.write_blob(raw.getvalue(), MEDIA_LAYER_TAR)
    config = evil_store.write_json(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer.digest]}},
        MEDIA_CONFIG,
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json()],
    }
    digest = evil_store.write_json(manifest, MEDIA_MANIFEST).digest
    push(evil_store, digest, parse_reference(f"{registry.address}/evil/base:v1"))

    other = write_project(tmp_path / "b", TOML.format(base="scratch"), {"root/x": "x"}).parent
    result = herd(other, "pull", f"{registry.address}/evil/base@{digest}", check=False)
    assert result.returncode == 1
    assert f"refusing {registry.address}/evil/base@{digest}, layer 1 of 1: member " in result.stderr
    assert "'../../../etc/cron.d/evil' has a '..' component" in result.stderr
    assert image_store(load_project(other / "herd.toml")).index() == []

    based = write_project(
        tmp_path / "c", TOML.format(base=f"{registry.address}/evil/base:v1"), {"root/x": "x"}
    )
    baking = herd(based.parent, "bake", check=False)
    assert baking.returncode == 1 and "'../../../etc/cron.d/evil' has a '..' component" in baking.stderr
    assert image_store(load_project(based)).index() == []


def test_a_registry_base_by_digest_and_by_a_pinned_tag(tmp_path: Path, registry: RunningRegistry) -> None:
    base_project = baked(tmp_path / "base")
    v1 = image_digest(base_project)
    herd(base_project, "push", "web", f"{registry.address}/base/img:v1")
    base_layers = image_store(load_project(base_project / "herd.toml")).manifest(v1)["layers"]

    by_digest = baked(tmp_path / "app1", base=f"{registry.address}/base/img@{v1}", text="app\n")
    layers = image_store(load_project(by_digest / "herd.toml")).manifest(image_digest(by_digest))["layers"]
    assert [x["digest"] for x in layers[: len(base_layers)]] == [x["digest"] for x in base_layers]

    by_tag = baked(tmp_path / "app2", base=f"{registry.address}/base/img:v1", text="app\n")
    assert v1 in (by_tag / "herd.lock").read_text(), "the tag is pinned to its digest"
    moved = baked(tmp_path / "base2", text="a newer base\n")  # the tag moves on the registry
    herd(moved, "push", "web", f"{registry.address}/base/img:v1")
    v2 = image_digest(moved)
    herd(by_tag, "bake")
    assert v1 in (by_tag / "herd.lock").read_text() and v2 not in (by_tag / "herd.lock").read_text()
    herd(by_tag, "bake", "--refresh")
    assert v2 in (by_tag / "herd.lock").read_text(), "--refresh resolves the tag again"


def test_basic_auth(tmp_path: Path) -> None:
    import bcrypt

    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("herd:" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode() + "\n")
    auth = f"auth:\n  htpasswd:\n    realm: herd-test\n    path: {htpasswd}\n"
    running = RunningRegistry(tmp_path / "registry", auth)
    try:
        project = baked(tmp_path / "a")
        anonymous = herd(project, "push", "web", f"{running.address}/reg/web:v1", check=False)
        assert anonymous.returncode == 1 and "HERD_REGISTRY_USERNAME" in anonymous.stderr
        os.environ.update(HERD_REGISTRY_USERNAME="herd", HERD_REGISTRY_PASSWORD="s3cret")
        try:
            assert "pushed 2 blob(s)" in herd(project, "push", "web", f"{running.address}/reg/web:v1").stdout
        finally:
            del os.environ["HERD_REGISTRY_USERNAME"], os.environ["HERD_REGISTRY_PASSWORD"]
    finally:
        running.stop()


class TokenServer:
    """A token service on 127.0.0.1 issuing ES256 JWTs (with the signing certificate in x5c) that
    docker-registry's `auth: token` verifies against its root certificate bundle."""

    def __init__(self, root: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "herd-test-token")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1)).sign(self.key, hashes.SHA256())
        )  # fmt: skip
        self.bundle = root / "token.pem"
        self.bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self.asked: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.asked.append(self.headers.get("Authorization", ""))
                if self.headers.get("Authorization") != "Basic " + base64.b64encode(b"herd:s3cret").decode():
                    self.send_response(401)
                    self.end_headers()
                    return
                from urllib.parse import parse_qs, urlparse

                query = parse_qs(urlparse(self.path).query)
                body = json.dumps({"token": outer.token(query.get("scope", [""])[0])}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, scope: str) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        access = []
        if scope:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": "herd-test", "sub": "herd", "aud": "herd-registry", "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}  # fmt: skip
        header = {"typ": "JWT", "alg": "ES256", "x5c": [self.x5c]}
        signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def stop(self) -> None:
        self.server.shutdown()


def test_token_auth(tmp_path: Path) -> None:
    tokens = TokenServer(tmp_path)
    auth = (
        f"auth:\n  token:\n    realm: {tokens.realm}\n    service: herd-registry\n    issuer: herd-test\n"
        f"    rootcertbundle: {tokens.bundle}\n"
    )
    running = RunningRegistry(tmp_path / "registry", auth)
    os.environ.update(HERD_REGISTRY_USERNAME="herd", HERD_REGISTRY_PASSWORD="s3cret")
    try:
        project = baked(tmp_path / "a")
        digest = image_digest(project)
        assert "pushed 2 blob(s)" in herd(project, "push", "web", f"{running.address}/reg/web:v1").stdout
        other = write_project(tmp_path / "b", TOML.format(base="scratch"), {"root/x": "x"}).parent
        herd(other, "pull", f"{running.address}/reg/web@{digest}")
        assert any(a.startswith("Basic ") for a in tokens.asked), (
            "the token was asked for with our credentials"
        )
    finally:
        del os.environ["HERD_REGISTRY_USERNAME"], os.environ["HERD_REGISTRY_PASSWORD"]
        running.stop()
        tokens.stop()


@pytest.mark.docker
def test_deploy_through_the_registry_on_docker(
    tmp_path: Path, registry: RunningRegistry, debian_hello: Path
) -> None:
    """With `registry` set for the environment, a deploy pushes its images there and the docker
    driver runs them pulled back by digest."""
    from tests.helpers import container_of, hello_copy, instances, stop_project

    root = tmp_path / "hello"
    port = hello_copy(root, template=debian_hello)
    toml = root / "herd.toml"
    toml.write_text(
        toml.read_text().replace(
            'driver = "docker"', f'driver = "docker"\nregistry = "{registry.address}/herdtest"'
        )
    )
    try:
        out = herd(root, "deploy").stdout
        assert f"web: pushed to {registry.address}/herdtest/web@sha256:" in out
        digest = out.split(f"{registry.address}/herdtest/web@")[1].split()[0]
        for item in instances(root):
            image = json.loads(
                subprocess.run(["docker", "inspect", container_of(item["id"])], capture_output=True).stdout
            )[0]["Image"]
            pulled = json.loads(
                subprocess.run(["docker", "image", "inspect", image], capture_output=True).stdout
            )[0]
            assert f"{registry.address}/herdtest/web@{digest}" in pulled["RepoDigests"]
        assert "hello" in httpx.get(f"http://127.0.0.1:{port}/").text.lower()
    finally:
        stop_project(root)
        pulled_refs = subprocess.run(
            [
                "docker",
                "images",
                "--digests",
                "--format",
                "{{.Repository}}@{{.Digest}}",
                f"{registry.address}/herdtest/web",
            ],
            capture_output=True,
            text=True,
        ).stdout.split()
        if pulled_refs:  # untag what the engine pulled (the image itself may serve other tests)
            subprocess.run(["docker", "rmi", *pulled_refs], capture_output=True)
