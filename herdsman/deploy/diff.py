"""What changed between two releases, purely: config values by key path, images layer by layer.

`herd releases` says *which* keys changed; `herd diff A B` says from what to what, and which
layers of each image differ (a base change, the requirements, the app's copy) — what a person
wants to know before rolling back to A or promoting B.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ABSENT = "(absent)"


@dataclass(frozen=True)
class Change:
    path: str  # service.key.subkey
    before: str
    after: str


def _flat(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping) and value:
        for key, inner in value.items():
            _flat(f"{prefix}.{key}", inner, out)
    else:
        out[prefix] = repr(value) if not isinstance(value, str) else value


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """Every leaf of the services' config and images that differs, by key path, in order."""
    before: dict[str, str] = {}
    after: dict[str, str] = {}
    for content, flat in ((old, before), (new, after)):
        for name, entry in content.get("services", {}).items():
            flat[f"{name}.image"] = entry["image"]
            _flat(name, entry["config"], flat)
    return [
        Change(path, before.get(path, ABSENT), after.get(path, ABSENT))
        for path in sorted(set(before) | set(after))
        if before.get(path) != after.get(path)
    ]


@dataclass(frozen=True)
class Layer:
    digest: str
    size: int
    made_by: str  # the history entry that made it ("herd: app copy", a base's own...)


@dataclass(frozen=True)
class LayerDiff:
    same: list[Layer]
    removed: list[Layer]  # only in the first image
    added: list[Layer]  # only in the second


def layers_of(manifest: Mapping[str, Any], config: Mapping[str, Any]) -> list[Layer]:
    """An image's layers, each with the history entry that made it (empty layers have none)."""
    made = [h.get("created_by", "") for h in config.get("history", []) if not h.get("empty_layer")]
    layers = manifest.get("layers", [])
    made = [""] * (len(layers) - len(made)) + made[-len(layers) :] if layers else []
    return [Layer(item["digest"], int(item["size"]), by) for item, by in zip(layers, made, strict=True)]


def layer_diff(old: Sequence[Layer], new: Sequence[Layer]) -> LayerDiff:
    before = {layer.digest for layer in old}
    after = {layer.digest for layer in new}
    return LayerDiff(
        [layer for layer in new if layer.digest in before],
        [layer for layer in old if layer.digest not in after],
        [layer for layer in new if layer.digest not in before],
    )
