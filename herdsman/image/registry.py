"""Pushing images to and pulling them from an OCI registry, over the distribution API (httpx).

A reference is `REGISTRY/NAME[:TAG][@sha256:...]`; the registry part must look like a host
(`127.0.0.1:5000`, `registry.example.com`, `localhost:5000`). Loopback registries are spoken to
over http, every other one over https.

Push: each blob (config, layers) is first asked for (HEAD) and skipped when the registry has it;
otherwise uploaded (POST, then PUT with its digest). The manifest goes last, under the tag if one
is given and by digest always, with its bytes as stored — so its digest stays the one we baked.
Pull: by digest (a tag is resolved to a digest first, once, and said so); the manifest and every
blob are verified against their digests while they stream into the store, written atomically, so
a tampered blob is refused and leaves nothing behind. The layers are then checked by the unpacking
rules (`unpack.check_layers`): an image with a hostile layer is refused and never indexed.

Auth: anonymous, HTTP basic, and the bearer-token flow (a 401 with `WWW-Authenticate: Bearer
realm=...,service=...,scope=...` sends us to the realm, with basic credentials if we have them, for
a token). Credentials come from HERD_REGISTRY_USERNAME and HERD_REGISTRY_PASSWORD.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from herdsman.errors import BakeError
from herdsman.image.oci import (
    ANNOTATION_PULLED,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MEDIA_INDEX,
    MEDIA_MANIFEST,
    REF_NAME,
    Descriptor,
    ImageStore,
    sha256_digest,
)
from herdsman.image.unpack import check_layers

ACCEPT = ", ".join((MEDIA_MANIFEST, MEDIA_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST))
INDEXES = (MEDIA_INDEX, DOCKER_MANIFEST_LIST)
LOOPBACK = ("127.", "localhost", "[::1]", "::1")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^\w[\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_HINT = "a reference is REGISTRY/NAME[:TAG][@sha256:DIGEST], e.g. 127.0.0.1:5000/hello/web@sha256:..."


@dataclass(frozen=True)
class Reference:
    registry: str
    name: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = f"{self.registry}/{self.name}"
        if self.tag:
            text += f":{self.tag}"
        return text + (f"@{self.digest}" if self.digest else "")

    def by_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.name, None, digest)


def looks_like_registry(text: str) -> bool:
    first, slash, _ = text.partition("/")
    return bool(slash) and ("." in first or ":" in first or first == "localhost")


def parse_reference(text: str) -> Reference:
    """``REGISTRY/NAME[:TAG][@DIGEST]``, or a BakeError that says what is wrong with it."""
    if not looks_like_registry(text):
        raise BakeError(f"{text!r} does not start with a registry host", hint=_HINT)
    registry, _, rest = text.partition("/")
    rest, _, digest = rest.partition("@")
    name, tag = rest, None
    if ":" in rest:
        name, tag = rest.rsplit(":", 1)
    if not _NAME.match(name):
        raise BakeError(f"{text!r}: {name!r} is not a repository name (lower-case, / separated)", hint=_HINT)
    if tag is not None and not _TAG.match(tag):
        raise BakeError(f"{text!r}: {tag!r} is not a tag", hint=_HINT)
    if digest and not _DIGEST.match(digest):
        raise BakeError(f"{text!r}: {digest!r} is not a sha256 digest", hint=_HINT)
    return Reference(registry, name, tag, digest or None)


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', rest))


class Registry:
    """One registry, with the credentials from the environment; use as a context manager."""

    def __init__(self, registry: str, *, username: str | None = None, password: str | None = None) -> None:
        scheme = "http" if registry.startswith(LOOPBACK) else "https"
        self.registry = registry
        self.http = httpx.Client(base_url=f"{scheme}://{registry}", timeout=httpx.Timeout(30.0, read=300.0))
        self.username = username if username is not None else os.environ.get("HERD_REGISTRY_USERNAME")
        self.password = password if password is not None else os.environ.get("HERD_REGISTRY_PASSWORD")
        self.authorization: str | None = None
        self.uploaded = 0  # blobs sent by the last pushes
        self.skipped = 0  # blobs the registry already had

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    # HTTP with auth ---------------------------------------------------------------------------
    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        for attempt in (1, 2):
            headers = dict(kwargs.pop("headers", None) or {})
            if self.authorization:
                headers["Authorization"] = self.authorization
            try:
                response = self.http.request(method, url, headers=headers, **kwargs)
            except httpx.HTTPError as exc:
                raise BakeError(f"the registry {self.registry} is not answering: {exc}") from None
            kwargs["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
            if response.status_code != 401 or attempt == 2:
                return response
            self._authenticate(response.headers.get("www-authenticate", ""))
        raise AssertionError("unreachable")

    def _authenticate(self, header: str) -> None:
        scheme, params = _challenge(header)
        basic = (self.username or "", self.password or "") if self.username else None
        if scheme == "basic":
            if basic is None:
                raise BakeError(
                    f"the registry {self.registry} wants a user name and password",
                    hint="set HERD_REGISTRY_USERNAME and HERD_REGISTRY_PASSWORD",
                )
            self.authorization = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
        elif scheme == "bearer" and params.get("realm"):
            query = {k: v for k, v in params.items() if k in ("service", "scope")}
            try:
                reply = httpx.get(params["realm"], params=query, auth=basic, timeout=30)
            except httpx.HTTPError as exc:
                raise BakeError(f"the token service {params['realm']} is not answering: {exc}") from None
            if reply.status_code != 200:
                raise BakeError(
                    f"the token service of {self.registry} refused us ({reply.status_code})",
                    hint="check HERD_REGISTRY_USERNAME and HERD_REGISTRY_PASSWORD",
                )
            token = reply.json().get("token") or reply.json().get("access_token")
            self.authorization = f"Bearer {token}"
        else:
            raise BakeError(f"the registry {self.registry} asks for an unknown kind of auth: {header!r}")

    def _check(self, response: httpx.Response, what: str) -> httpx.Response:
        if response.status_code >= 400:
            detail = f"{response.status_code}: {response.text[:200]}"
            raise BakeError(f"the registry {self.registry} refused to {what} ({detail})")
        return response

    # blobs and manifests ----------------------------------------------------------------------
    def has_blob(self, name: str, digest: str) -> bool:
        return self.request("HEAD", f"/v2/{name}/blobs/{digest}").status_code == 200

    def upload_blob(self, name: str, digest: str, path: Path) -> None:
        started = self._check(
            self.request("POST", f"/v2/{name}/blobs/uploads/"), f"start an upload of {digest}"
        )
        location = started.headers["location"]
        with path.open("rb") as data:
            url = location + ("&" if "?" in location else "?") + f"digest={digest}"
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(path.stat().st_size)}
            self._check(self.request("PUT", url, content=data, headers=headers), f"take blob {digest}")

    def put_manifest(self, name: str, ref: str, raw: bytes, media_type: str) -> None:
        headers = {"Content-Type": media_type}
        self._check(
            self.request("PUT", f"/v2/{name}/manifests/{ref}", content=raw, headers=headers),
            "take the manifest",
        )

    def get_manifest(self, name: str, ref: str) -> tuple[bytes, str]:
        response = self._check(
            self.request("GET", f"/v2/{name}/manifests/{ref}", headers={"Accept": ACCEPT}),
            f"give manifest {ref}",
        )
        media_type = response.headers.get("content-type", MEDIA_MANIFEST).split(";")[0]
        return response.content, media_type

    def fetch_blob(self, store: ImageStore, name: str, descriptor: Descriptor) -> None:
        """Stream a blob into the store, verified against its digest (a mismatch leaves nothing)."""
        if store.has_blob(descriptor.digest):
            return
        with self.http.stream(
            "GET", f"/v2/{name}/blobs/{descriptor.digest}", headers=self._auth(), follow_redirects=True
        ) as response:
            self._check(response, f"give blob {descriptor.digest}")
            stream = _Reader(response.iter_bytes(1 << 20))
            try:
                store.copy_in(stream, descriptor.media_type, expected=descriptor.digest)  # type: ignore[arg-type]
            except BakeError:
                raise BakeError(
                    f"blob {descriptor.digest} of {self.registry}/{name} does not match its digest: refused",
                    hint="the registry's copy is damaged or was tampered with; nothing was stored",
                ) from None

    def _auth(self) -> dict[str, str]:
        return {"Authorization": self.authorization} if self.authorization else {}


class _Reader:
    """A file-like read() over an iterator of chunks."""

    def __init__(self, chunks: Any) -> None:
        self.chunks = iter(chunks)
        self.buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.buffer += chunk
        out, self.buffer = (self.buffer, b"") if size < 0 else (self.buffer[:size], self.buffer[size:])
        return out


@dataclass(frozen=True)
class Pushed:
    reference: Reference  # by digest
    uploaded: int  # blobs sent
    skipped: int  # blobs the registry already had


def push(store: ImageStore, manifest_digest: str, target: Reference) -> Pushed:
    """Send an image: the blobs the registry lacks, then the manifest (by digest, and by tag)."""
    raw = store.read_blob(manifest_digest)
    manifest = store.manifest(manifest_digest)
    media_type = manifest.get("mediaType") or MEDIA_MANIFEST
    blobs = [
        Descriptor.from_json(manifest["config"]),
        *(Descriptor.from_json(x) for x in manifest.get("layers", [])),
    ]
    with Registry(target.registry) as registry:
        for blob in blobs:
            if registry.has_blob(target.name, blob.digest):
                registry.skipped += 1
                continue
            registry.upload_blob(target.name, blob.digest, store.blob_path(blob.digest))
            registry.uploaded += 1
        registry.put_manifest(target.name, manifest_digest, raw, media_type)
        if target.tag:
            registry.put_manifest(target.name, target.tag, raw, media_type)
    return Pushed(target.by_digest(manifest_digest), registry.uploaded, registry.skipped)


def resolve(reference: Reference) -> str:
    """The digest a reference names now (its own digest, or its tag's)."""
    if reference.digest:
        return reference.digest
    with Registry(reference.registry) as registry:
        raw, _ = registry.get_manifest(reference.name, reference.tag or "latest")
    return sha256_digest(raw)


def pull(store: ImageStore, reference: Reference, platform: str = "amd64", *, by: str = "") -> Descriptor:
    """Fetch an image by digest into the store (every blob verified); returns its manifest's
    descriptor, recorded in the store's index under the reference (and, with ``by``, as pulled by
    that command: `herd images` lists such images with the stack's own)."""
    if not reference.digest:
        raise BakeError(f"pull {reference} by digest, not by tag", hint="herd pull REGISTRY/NAME@sha256:...")
    with Registry(reference.registry) as registry:
        raw, media_type = registry.get_manifest(reference.name, reference.digest)
        if sha256_digest(raw) != reference.digest:
            raise BakeError(f"the manifest {reference} does not match its digest: refused")
        store.write_blob(raw, media_type)
        digest = reference.digest
        if media_type in INDEXES:  # a multi-platform image: this machine's one
            children = [
                m
                for m in store.read_json(digest).get("manifests", [])
                if (m.get("platform") or {}).get("architecture") == platform
            ]
            if not children:
                raise BakeError(f"{reference} has no image for linux/{platform}")
            digest = str(children[0]["digest"])
            raw, media_type = registry.get_manifest(reference.name, digest)
            if sha256_digest(raw) != digest:
                raise BakeError(f"the manifest {digest} of {reference} does not match its digest: refused")
        manifest = json.loads(raw)
        for blob in [
            Descriptor.from_json(manifest["config"]),
            *(Descriptor.from_json(x) for x in manifest.get("layers", [])),
        ]:
            registry.fetch_blob(store, reference.name, blob)
        store.write_blob(raw, media_type)
    layers = [Descriptor.from_json(x) for x in manifest.get("layers", [])]
    check_layers(store, layers, str(reference.by_digest(digest)))
    annotations = {REF_NAME: str(reference.by_digest(digest))} | ({ANNOTATION_PULLED: by} if by else {})
    descriptor = Descriptor(media_type, digest, len(raw), annotations)
    store.add_to_index(descriptor)
    return descriptor
