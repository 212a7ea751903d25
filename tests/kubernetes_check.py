"""Checks shared by the unit and integration tests of `herd export kubernetes`.

- `validate_file`: every object against Kubernetes' own JSON schemas (the `kubernetes-validate`
  package, `K8S_VERSION`, strict: an unknown field is an error), plus what those schemas do not
  say: object names are DNS-1123 labels, label keys and values are valid.
- Golden files: `tests/golden/kubernetes-hello/` is the export of examples/hello, release 1, with
  the image digest written as `GOLDEN_DIGEST`, the registry as `GOLDEN_REGISTRY` and the route's
  port as 8080 (`normalise` does that to a real export). To regenerate them after a deliberate
  change: `HERD_UPDATE_GOLDEN=1 .venv/bin/pytest -q -p no:cacheprovider
  tests/unit/test_kubernetes_export.py -k golden`, then review the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

K8S_VERSION = "1.37.0"
GOLDEN = Path(__file__).resolve().parent / "golden" / "kubernetes-hello"
GOLDEN_DIGEST = "sha256:" + "0" * 64
GOLDEN_REGISTRY = "registry.example:5000/hello"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)


def _labels(body: dict[str, Any]) -> list[dict[str, str]]:
    found = [body["metadata"].get("labels", {})]
    template = body.get("spec", {}).get("template")
    if template:
        found.append(template["metadata"].get("labels", {}))
    return found


def validate_object(body: dict[str, Any]) -> str:
    """Raises if ``body`` is not a valid object; returns `kind/name`."""
    kubernetes_validate.validate(body, K8S_VERSION, strict=True)
    name = body["metadata"]["name"]
    assert _NAME.match(name), f"{name!r} is not a DNS-1123 label"
    for labels in _labels(body):
        for key, value in labels.items():
            assert _LABEL_KEY.match(key), f"{key!r} is not a label key"
            assert _LABEL_VALUE.match(value), f"{value!r} ({key}) is not a label value"
    return f"{body['kind']}/{name}"


def validate_file(path: Path) -> list[str]:
    """Every object of one YAML file, validated."""
    return [validate_object(body) for body in yaml.safe_load_all(path.read_text()) if body]


def normalise(text: str, *, digest: str, registry: str, route_port: int | None = None) -> str:
    """A real export written as the golden files are (see the module's docstring)."""
    text = text.replace(digest, GOLDEN_DIGEST).replace(registry, GOLDEN_REGISTRY)
    if route_port is not None:
        text = text.replace(f"port: {route_port}\n", "port: 8080\n")
    return text


def compare_with_golden(files: dict[str, str]) -> None:
    """``files`` (name -> text) are the golden files, byte for byte; HERD_UPDATE_GOLDEN=1 rewrites them."""
    if os.environ.get("HERD_UPDATE_GOLDEN") == "1":
        for old in GOLDEN.glob("*"):
            old.unlink()
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (GOLDEN / name).write_text(text)
    golden = {path.name: path.read_text() for path in sorted(GOLDEN.iterdir())}
    assert sorted(files) == sorted(golden)
    for name, text in files.items():
        assert text == golden[name], f"{name} differs from {GOLDEN / name} (see tests/kubernetes_check.py)"
