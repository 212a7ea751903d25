"""Baking: a service's recipe -> an OCI image in the local store, as a pure function of its inputs.

Inputs are the base (pinned in herd.lock), the pinned Python wheels, the project's files, the
recipe and SOURCE_DATE_EPOCH. Same inputs, same manifest digest, on any machine and in any directory.
Each layer is looked up in the layer cache by the digest of its inputs first, so a bake where nothing
changed only hashes files it has not seen and writes two small JSON blobs that already exist.
"""

from __future__ import annotations

import platform
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from herdsman.errors import BakeError
from herdsman.image import requirements, sources
from herdsman.image.bases import BaseImage, BaseRequest, resolve_base
from herdsman.image.cache import LayerCache, layer_key, stat_cache_file
from herdsman.image.lock import Lock
from herdsman.image.oci import MEDIA_CONFIG, MEDIA_MANIFEST, REF_NAME, Descriptor, ImageStore
from herdsman.image.progress import NullReporter, Reporter
from herdsman.image.tarball import COMPRESSOR, Layer, source_date_epoch, write_layer
from herdsman.spec import ImageRecipe, Project, Service, herd_home

ANNOTATION_SERVICE = "dev.herdsman.service"
ANNOTATION_STACK = "dev.herdsman.stack"
ANNOTATION_SPEC = "dev.herdsman.spec.digest"
ANNOTATION_COMPRESSOR = "dev.herdsman.compressor"
ANNOTATION_REVISION = "org.opencontainers.image.revision"
ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_BASE_NAME = "org.opencontainers.image.base.name"
ANNOTATION_BASE_DIGEST = "org.opencontainers.image.base.digest"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class BakeResult:
    service: str
    image: Descriptor  # the manifest, with its index annotations
    size: int  # config + layers, compressed
    built: tuple[str, ...] = ()  # layers written by this bake
    reused: tuple[str, ...] = field(default_factory=tuple)  # layers found in the cache


def image_store(project: Project) -> ImageStore:
    return ImageStore(herd_home(project) / "images")


def bake(
    project: Project,
    services: Sequence[str] | None = None,
    *,
    refresh: bool = False,
    reporter: Reporter | None = None,
) -> list[BakeResult]:
    """Bake the named services (all by default); update herd.lock when a pin was resolved."""
    reporter = reporter or NullReporter()
    names = list(services) if services else sorted(project.stack.service)
    for name in names:
        if name not in project.stack.service:
            known = ", ".join(sorted(project.stack.service))
            raise BakeError(
                f"there is no service {name!r} in {project.file}", hint=f"known services: {known}"
            )
    store = image_store(project)
    lock = Lock.load(project.lock_file)
    baker = _Baker(project, store, lock, refresh, reporter)
    try:
        results = [baker.bake_service(name) for name in names]
    finally:
        baker.stat_cache.save()
    if not services:
        lock.keep_only(set(project.stack.service))
    if lock.save():
        reporter.note(f"wrote {project.lock_file.name}")
    return results


class _Baker:
    def __init__(
        self, project: Project, store: ImageStore, lock: Lock, refresh: bool, reporter: Reporter
    ) -> None:
        self.project = project
        self.store = store
        self.lock = lock
        self.refresh = refresh
        self.reporter = reporter
        self.cache = LayerCache(store)
        self.stat_cache = sources.StatCache(stat_cache_file(store))
        self.epoch = source_date_epoch()
        self.revision = git_revision(project.root)

    def bake_service(self, name: str) -> BakeResult:
        service = self.project.stack.service[name]
        recipe = service.image
        base = self._base(name, recipe)
        layers: list[Layer] = [Layer(d, i) for d, i in zip(base.layers, base.diff_ids, strict=True)]
        history: list[dict[str, Any]] = list(base.config.get("history", []))
        built: list[str] = []
        reused: list[str] = []

        def add(label: str, layer: Layer, was_cached: bool) -> None:
            layers.append(layer)
            history.append({"created": self._created(), "created_by": f"herd: {label}"})
            (reused if was_cached else built).append(label)

        if recipe.requirements:
            add(
                f"requirements {recipe.requirements} -> {recipe.python_path}",
                *self._requirements_layer(name, recipe),
            )
        else:
            self.lock.put(name, "requirements", None)
        for step in recipe.copy_steps:
            add(f"copy {step.src} -> {step.dest}", *self._copy_layer(step.src, step.dest))

        config = self._config(name, service, base, layers, history)
        config_blob = self.store.write_json(config, MEDIA_CONFIG)
        annotations = self._annotations(name, recipe, base)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config_blob.to_json(),
            "layers": [layer.descriptor.to_json() for layer in layers],
            "annotations": annotations,
        }
        stored = self.store.write_json(manifest, MEDIA_MANIFEST)
        index_annotations = {
            REF_NAME: f"{self.project.stack.name}/{name}:{stored.digest[7:19]}",
            ANNOTATION_STACK: self.project.stack.name,
            ANNOTATION_SERVICE: name,
        }
        if self.revision:
            index_annotations[ANNOTATION_REVISION] = self.revision
        image = Descriptor(MEDIA_MANIFEST, stored.digest, stored.size, index_annotations)
        self.store.add_to_index(image)
        size = config_blob.size + sum(layer.descriptor.size for layer in layers)
        return BakeResult(name, image, size, tuple(built), tuple(reused))

    # pieces -------------------------------------------------------------------------------------
    def _base(self, name: str, recipe: ImageRecipe) -> BaseImage:
        pinned = self.lock.get(name, "base")
        if pinned is not None and (
            pinned.get("name") != recipe.base or sorted(pinned.get("packages", [])) != sorted(recipe.packages)
        ):
            self.reporter.note(f"{name}: base changed in herd.toml, resolving it anew")
            pinned = None
        request = BaseRequest(
            recipe.base, recipe.packages, self.project.root, self.store, pinned, self.refresh, self.reporter
        )
        base = resolve_base(request)
        self.lock.put(name, "base", base.pin)
        return base

    def _requirements_layer(self, name: str, recipe: ImageRecipe) -> tuple[Layer, bool]:
        assert recipe.requirements is not None
        root = self.project.root
        pinned = self.lock.get(name, "requirements")
        why = "--refresh" if self.refresh else requirements.needs_resolving(root, recipe.requirements, pinned)
        if why or pinned is None:
            self.reporter.note(f"{name}: resolving {recipe.requirements} ({why})")
            pinned = requirements.resolve(root, recipe.requirements, self.reporter)
            self.lock.put(name, "requirements", pinned)
        key = layer_key("requirements", requirements.layer_material(pinned, recipe.python_path), self.epoch)
        cached = self.cache.get(key)
        if cached is not None:
            return cached, True
        with tempfile.TemporaryDirectory(dir=self.store.root.parent, prefix="stage-") as tmp:
            stage = Path(tmp) / "root"
            stage.mkdir()
            entries = requirements.install(root, pinned, recipe.python_path, stage, self.reporter)
            with self.reporter.task("compressing the requirements layer"):
                layer = write_layer(self.store, entries, mtime=self.epoch)
        self.cache.put(key, layer)
        return layer, False

    def _copy_layer(self, src: str, dest: str) -> tuple[Layer, bool]:
        files = sources.scan(self.project.root, src, dest, self.stat_cache)
        key = layer_key("copy", sources.layer_key(files), self.epoch)
        cached = self.cache.get(key)
        if cached is not None:
            return cached, True
        with self.reporter.task(f"writing the copy layer ({len(files)} entries)", total=len(files)) as task:
            layer = write_layer(
                self.store, sources.layer_entries(files), mtime=self.epoch, on_bytes=lambda _: task.advance()
            )
        self.cache.put(key, layer)
        return layer, False

    def _created(self) -> str:
        return datetime.fromtimestamp(self.epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _config(
        self, name: str, service: Service, base: BaseImage, layers: list[Layer], history: list[dict[str, Any]]
    ) -> dict[str, Any]:
        recipe = service.image
        inherited: dict[str, Any] = dict(base.config.get("config") or {})
        env = _env_dict(inherited.get("Env") or [])
        if recipe.requirements:
            env["PYTHONPATH"] = recipe.python_path
            env["PATH"] = f"{recipe.python_path}/bin:{env.get('PATH', DEFAULT_PATH)}"
        env.update(recipe.env)
        labels = dict(inherited.get("Labels") or {})
        labels.update(recipe.labels)
        labels.update({"herd.stack": self.project.stack.name, "herd.service": name})
        image_config: dict[str, Any] = {
            "Env": [f"{k}={v}" for k, v in env.items()],
            "WorkingDir": recipe.workdir,
            "Labels": dict(sorted(labels.items())),
        }
        user = recipe.user or inherited.get("User")
        if user:
            image_config["User"] = user
        entrypoint = list(recipe.entrypoint) or inherited.get("Entrypoint")
        if entrypoint:
            image_config["Entrypoint"] = entrypoint
        command = list(service.command) or inherited.get("Cmd")
        if command:
            image_config["Cmd"] = command
        ports = dict(inherited.get("ExposedPorts") or {})
        if service.port:
            ports[f"{service.port}/tcp"] = {}
        if ports:
            image_config["ExposedPorts"] = ports
        return {
            "created": self._created(),
            "architecture": base.config.get("architecture") or machine_architecture(),
            "os": base.config.get("os") or "linux",
            "config": image_config,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
            "history": history,
        }

    def _annotations(self, name: str, recipe: ImageRecipe, base: BaseImage) -> dict[str, str]:
        annotations = dict(recipe.annotations)
        annotations.update(
            {
                ANNOTATION_CREATED: self._created(),
                ANNOTATION_BASE_NAME: recipe.base,
                ANNOTATION_SPEC: self.project.image_spec_digest(name),
                ANNOTATION_COMPRESSOR: COMPRESSOR,
                "org.opencontainers.image.title": f"{self.project.stack.name}/{name}",
            }
        )
        if base.digest:
            annotations[ANNOTATION_BASE_DIGEST] = base.digest
        if self.revision:
            annotations[ANNOTATION_REVISION] = self.revision
        return dict(sorted(annotations.items()))


def _env_dict(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key] = value
    return out


def machine_architecture() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def git_revision(root: Path) -> str:
    """The commit the project is at ("" outside git): recorded, so an image says where it came from."""
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""
