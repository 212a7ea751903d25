"""The layer cache: a layer is keyed by the digest of its inputs, so an unchanged layer is never rebuilt.

A key names everything that decides a layer's bytes (kind of layer, writer version, file list with
content digests, lock entries...). The value is the layer's blob digest and diff_id; a hit counts
only if the blob is still in the store.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from herdsman.image.oci import Descriptor, ImageStore, canonical_json
from herdsman.image.tarball import COMPRESSOR, Layer

# Bump when the bytes a layer writer produces change for the same inputs.
WRITER_VERSION = 1


def layer_key(kind: str, material: Any, epoch: int) -> str:
    """The cache key of a layer: its kind, its inputs, the mtime stamped on it and the writer."""
    blob = canonical_json(
        {"kind": kind, "writer": WRITER_VERSION, "compressor": COMPRESSOR, "epoch": epoch, "in": material}
    )
    return hashlib.sha256(blob).hexdigest()


class LayerCache:
    def __init__(self, store: ImageStore) -> None:
        self.store = store
        self.directory = store.root.parent / "cache" / "layers"

    def get(self, key: str) -> Layer | None:
        try:
            data = json.loads((self.directory / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        descriptor = Descriptor(data["media_type"], data["digest"], int(data["size"]))
        if not self.store.has_blob(descriptor.digest):
            return None
        return Layer(descriptor, data["diff_id"])

    def put(self, key: str, layer: Layer) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        record = {
            "media_type": layer.descriptor.media_type,
            "digest": layer.descriptor.digest,
            "size": layer.descriptor.size,
            "diff_id": layer.diff_id,
        }
        tmp = self.directory / f".{key}.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.directory / f"{key}.json")


def stat_cache_file(store: ImageStore) -> Path:
    return store.root.parent / "cache" / "files.json"
