"""Baking: a service's recipe -> an OCI image in the local store, as a pure function of its inputs.

Inputs are the base (pinned in herd.lock), the pinned Python wheels, the project's files, the
recipe and SOURCE_DATE_EPOCH. Same inputs, same manifest digest, on any machine and in any directory.
Each layer is looked up in the layer cache by the digest of its inputs first, so a bake where nothing
changed only hashes files it has not seen and writes two small JSON blobs that already exist.
"""

from __future__ import annotations

import platform
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from herdsman.errors import BakeError
from herdsman.image import requirements, sources
from herdsman.image.assemble import (
    BakeResult,
    Prepared,
    assemble,
    created,
    git_revision,
    prepared_key,
    save_prepared,
)
from herdsman.image.bases import BaseImage, BaseRequest, resolve_base
from herdsman.image.cache import LayerCache, layer_key, stat_cache_file
from herdsman.image.lock import Lock
from herdsman.image.oci import ImageStore
from herdsman.image.progress import NullReporter, Reporter
from herdsman.image.tarball import COMPRESSOR, Layer, source_date_epoch, write_layer
from herdsman.spec import ImageRecipe, Project, Service, herd_home

ANNOTATION_SPEC = "dev.herdsman.spec.digest"
ANNOTATION_COMPRESSOR = "dev.herdsman.compressor"
ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_BASE_NAME = "org.opencontainers.image.base.name"
ANNOTATION_BASE_DIGEST = "org.opencontainers.image.base.digest"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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
    prepared = [baker.prepare(name) for name in names]
    if not services:
        lock.keep_only(set(project.stack.service))
    if lock.save():
        reporter.note(f"wrote {project.lock_file.name}")
    stat_cache = sources.StatCache(stat_cache_file(store))
    try:
        results = [
            assemble(
                store,
                project.root,
                p,
                epoch=baker.epoch,
                stat_cache=stat_cache,
                reporter=reporter,
                revision=baker.revision,
            )
            for p in prepared
        ]
    finally:
        stat_cache.save()
    if not services:  # remember the recipes: the next bake with the same inputs starts from them
        key = prepared_key(project.file, project.lock_file, baker.epoch)
        save_prepared(herd_home(project), key, [_as_reused(p) for p in prepared])
    return results


def _as_reused(prepared: Prepared) -> Prepared:
    """A recipe as a later bake sees it: its base and requirements layers already exist."""
    return {**prepared, "built": [], "reused": prepared["built"] + prepared["reused"]}


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
        self.epoch = source_date_epoch()
        self.revision = git_revision(project.root)

    def prepare(self, name: str) -> Prepared:
        """The first half of a bake: base, requirements layer and image config (see assemble.py)."""
        service = self.project.stack.service[name]
        recipe = service.image
        base = self._base(name, recipe)
        layers: list[Layer] = [Layer(d, i) for d, i in zip(base.layers, base.diff_ids, strict=True)]
        history: list[dict[str, Any]] = list(base.config.get("history", []))
        built: list[str] = []
        reused: list[str] = []
        if recipe.requirements:
            label = f"requirements {recipe.requirements} -> {recipe.python_path}"
            layer, was_cached = self._requirements_layer(name, recipe)
            layers.append(layer)
            history.append({"created": created(self.epoch), "created_by": f"herd: {label}"})
            (reused if was_cached else built).append(label)
        else:
            self.lock.put(name, "requirements", None)
        return {
            "service": name,
            "stack": self.project.stack.name,
            "layers": [[layer.descriptor.to_json(), layer.diff_id] for layer in layers],
            "history": history,
            "built": built,
            "reused": reused,
            "copy": [[step.src, step.dest] for step in recipe.copy_steps],
            "config": self._config(name, service, base),
            "annotations": self._annotations(name, recipe, base),
        }

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

    def _config(self, name: str, service: Service, base: BaseImage) -> dict[str, Any]:
        """The image config but for rootfs and history, which assembling adds."""
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
            "created": created(self.epoch),
            "architecture": base.config.get("architecture") or machine_architecture(),
            "os": base.config.get("os") or "linux",
            "config": image_config,
        }

    def _annotations(self, name: str, recipe: ImageRecipe, base: BaseImage) -> dict[str, str]:
        annotations = dict(recipe.annotations)
        annotations.update(
            {
                ANNOTATION_CREATED: created(self.epoch),
                ANNOTATION_BASE_NAME: recipe.base,
                ANNOTATION_SPEC: self.project.image_spec_digest(name),
                ANNOTATION_COMPRESSOR: COMPRESSOR,
                "org.opencontainers.image.title": f"{self.project.stack.name}/{name}",
            }
        )
        if base.digest:
            annotations[ANNOTATION_BASE_DIGEST] = base.digest
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
