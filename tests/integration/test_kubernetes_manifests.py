"""`herd export kubernetes` end to end: examples/hello deployed on the process driver with its
images pushed to a real registry (Debian's docker-registry on 127.0.0.1), exported, every file
valid against Kubernetes' schemas (strict) and read by the installed kubectl, equal to the golden
files once the run's digest, registry address and route port are normalised. An image the
registry lacks is refused with the `herd push` that fixes it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from herdsman.state import StateStore
from tests.conftest import need_command
from tests.helpers import hello_copy, herd, stop_project
from tests.integration.test_registry import RunningRegistry
from tests.kubernetes_check import compare_with_golden, normalise, validate_file


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RunningRegistry]:
    running = RunningRegistry(tmp_path / "registry")
    yield running
    running.stop()


def exported(directory: Path) -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(directory.iterdir())}


def test_hello_exports_valid_manifests_equal_to_the_golden_files(
    tmp_path: Path, registry: RunningRegistry
) -> None:
    root = tmp_path / "hello"
    route_port = hello_copy(root)
    prefix = f"{registry.address}/hello"
    toml = root / "herd.toml"
    toml.write_text(toml.read_text() + f'\n[environment.production]\nregistry = "{prefix}"\n')
    out = tmp_path / "k8s"
    try:
        deployed = herd(root, "deploy", timeout=300)
        assert "pushed to" in deployed.stdout
        digest = StateStore(root / ".herd" / "state.db").release("production", 1).services()["web"].image

        # an image the registry lacks is refused, with the push that fixes it
        elsewhere = f"{registry.address}/elsewhere"
        missing = herd(root, "export", "kubernetes", "-o", str(out), "--registry", elsewhere, check=False)
        assert missing.returncode == 1 and "the registry lacks: web" in missing.stderr
        assert f"herd push {digest} {elsewhere}/web" in missing.stderr
        assert not out.exists(), "nothing is written when an image is missing"
        herd(root, "push", digest, f"{elsewhere}/web")
        assert herd(root, "export", "kubernetes", "-o", str(out), "--registry", elsewhere).returncode == 0

        result = herd(root, "export", "kubernetes", "production", "-o", str(out))
        assert "release 1 of production" in result.stdout
        assert "warning: service.web.image.base" in result.stdout
        files = exported(out)
        assert not any("elsewhere" in text for text in files.values()), "the earlier export was replaced"
        kinds = sorted(kind for name in files if name.endswith(".yaml") for kind in validate_file(out / name))
        assert kinds == [
            "Deployment/hello-web",
            "Job/hello-web-migrate-1",
            "PersistentVolumeClaim/hello-counter",
            "PodDisruptionBudget/hello-web",
            "Service/hello-web",
        ]
        assert f"image: {prefix}/web@{digest}" in files["30-deployment-hello-web.yaml"]
        compare_with_golden(
            {
                name: normalise(text, digest=digest, registry=prefix, route_port=route_port)
                for name, text in files.items()
            }
        )
        herd(root, "export", "kubernetes", "-o", str(out))
        assert exported(out) == files, "the same release gives the same bytes"

        # kubectl cannot validate without a cluster (apply and create --dry-run=client ask a server
        # for the API's resources); offline, `annotate --local` only decodes every file (it checks
        # no field and no kind): the schemas above are the real check
        kubectl = need_command("kubectl")
        read = subprocess.run(
            [kubectl, "annotate", "--local", "-f", str(out), "herd.dev/checked=yes", "-o", "name"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "KUBECONFIG": str(tmp_path / "no-kubeconfig")},
        )
        assert read.returncode == 0, read.stderr
        assert sorted(read.stdout.split()) == [
            "deployment.apps/hello-web",
            "job.batch/hello-web-migrate-1",
            "persistentvolumeclaim/hello-counter",
            "poddisruptionbudget.policy/hello-web",
            "service/hello-web",
        ]
    finally:
        stop_project(root)
