"""`herd export kubernetes`: the manifest builder on parsed stacks (every kind of object, every kind
of probe, hardening, labels, order), validated against Kubernetes' schemas in strict mode, byte for
byte deterministic, equal to the golden files of examples/hello, and never holding a secret value.
The CLI runs on a state store with a recorded release (no instance is started here)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from herdsman.export.files import MARKER, header, rendered, write_export
from herdsman.export.gaps import kubernetes_gaps
from herdsman.export.kubernetes import ExportSource, Manifest, manifests, object_name
from herdsman.export.pod import NONROOT_UID
from herdsman.spec import load_project, parse_stack
from herdsman.spec.models import Stack
from herdsman.state import StateStore, services_of
from tests.helpers import HELLO
from tests.kubernetes_check import (
    GOLDEN_DIGEST,
    GOLDEN_REGISTRY,
    compare_with_golden,
    validate_file,
    validate_object,
)

DIGEST = "sha256:" + "ab" * 32

RICH = """
[stack]
name = "shop"

[service.web]
command = ["python3", "app.py"]
port = 8000
replicas = 3
secrets = ["API_KEY", "DB_PASSWORD"]
env = { MODE = "prod" }
volumes = { uploads = "/srv/uploads" }
stop_grace = "20s"

[service.web.image]
base = "debian:bookworm"
user = "1000:2000"

[service.web.health]
path = "/ready"
interval = "2s"
timeout = "1500ms"
successes = 2
failures = 4
deadline = "30s"

[service.web.route]
listen = "127.0.0.1:9090"

[service.web.limits]
memory = "512m"
cpus = 0.5

[service.web.scale]
min = 2
max = 8
target_inflight = 20
scale_in_window = "2m"

[service.web.migrate]
command = ["python3", "migrate.py"]
timeout = "5m"

[service.cache]
command = "cache --port 7000"
port = 7000
cap_add = ["NET_BIND_SERVICE"]

[service.cache.health]
type = "tcp"

[service.worker]
command = ["python3", "worker.py"]
volumes = { uploads = "/data" }

[service.worker.image]
user = "app"

[service.worker.health]
type = "command"
command = ["python3", "check.py", "--quick"]

[service.worker.deploy]
max_surge = 0
max_unavailable = 1

[volume.uploads]
description = "what users upload"
"""


def content_of(stack: Stack, images: dict[str, str] | None = None) -> dict[str, Any]:
    """A release's content as `deploy.release` records it (config without the image recipe)."""
    return {
        "stack": stack.name,
        "services": {
            name: {
                "image": (images or {}).get(name, DIGEST),
                "config": service.model_dump(mode="json", by_alias=True, exclude={"image"}),
            }
            for name, service in sorted(stack.service.items())
        },
    }


def source_of(stack: Stack, **overrides: Any) -> ExportSource:
    values: dict[str, Any] = {
        "stack": stack,
        "env": "production",
        "release": 7,
        "services": services_of(content_of(stack)),
        "registry": "registry.example:5000/shop",
    }
    values.update(overrides)
    return ExportSource(**values)


def by_kind(found: list[Manifest]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m.kind, m.name): m.body for m in found}


def container(body: dict[str, Any]) -> dict[str, Any]:
    box = body["spec"]["template"]["spec"]["containers"][0]
    assert isinstance(box, dict)
    return box


@pytest.fixture
def rich() -> dict[tuple[str, str], dict[str, Any]]:
    return by_kind(manifests(source_of(parse_stack(RICH))))


def test_every_kind_of_object_is_written_and_valid_for_kubernetes(tmp_path: Path) -> None:
    found = manifests(source_of(parse_stack(RICH)))
    assert sorted((m.kind, m.name) for m in found) == sorted(
        [
            ("PersistentVolumeClaim", "shop-uploads"),
            ("Job", "shop-web-migrate-7"),
            ("Deployment", "shop-cache"),
            ("Deployment", "shop-web"),
            ("Deployment", "shop-worker"),
            ("Service", "shop-cache"),
            ("Service", "shop-web"),
            ("HorizontalPodAutoscaler", "shop-web"),
            ("PodDisruptionBudget", "shop-cache"),
            ("PodDisruptionBudget", "shop-web"),
            ("PodDisruptionBudget", "shop-worker"),
        ]
    )
    files = rendered(found, header("shop", "production", 7))
    write_export(tmp_path, files)
    validated = [name for path in sorted(tmp_path.glob("*.yaml")) for name in validate_file(path)]
    assert len(validated) == len(found)
    # one object per file, named in the order they are applied: claims, jobs, the rest
    assert [m.filename for m in found] == sorted(m.filename for m in found)
    assert [m.kind for m in found][:2] == ["PersistentVolumeClaim", "Job"]


def test_the_schemas_refuse_what_kubernetes_would(rich: dict[tuple[str, str], dict[str, Any]]) -> None:
    """The validator is strict: an unknown field or a wrong type is an error, so a pass means something."""
    body = yaml.safe_load(yaml.safe_dump(rich[("Deployment", "shop-web")]))
    body["spec"]["strategy"]["rollingUpdate"]["maxUnavialable"] = 0
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_object(body)
    body = yaml.safe_load(yaml.safe_dump(rich[("Deployment", "shop-web")]))
    body["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_object(body)


def test_probes_of_each_kind(rich: dict[tuple[str, str], dict[str, Any]]) -> None:
    web = container(rich[("Deployment", "shop-web")])
    assert web["readinessProbe"] == {
        "httpGet": {"path": "/ready", "port": "http"},
        "periodSeconds": 2,
        "timeoutSeconds": 2,  # 1500ms, rounded up to whole seconds
        "successThreshold": 2,
        "failureThreshold": 4,
    }
    assert web["livenessProbe"]["failureThreshold"] == 4 and "successThreshold" not in web["livenessProbe"]
    assert web["startupProbe"]["failureThreshold"] == math.ceil(30 / 2)  # the deadline, in periods
    assert web["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    cache = container(rich[("Deployment", "shop-cache")])
    assert cache["readinessProbe"]["tcpSocket"] == {"port": "http"}
    assert cache["args"] == ["cache", "--port", "7000"]
    worker = container(rich[("Deployment", "shop-worker")])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert worker[probe]["exec"] == {"command": ["python3", "check.py", "--quick"]}
    assert "ports" not in worker and ("Service", "shop-worker") not in rich


def test_rollout_stop_and_hardening(rich: dict[tuple[str, str], dict[str, Any]]) -> None:
    web = rich[("Deployment", "shop-web")]
    assert web["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert "replicas" not in web["spec"], "the autoscaler owns the count"
    pod = web["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 5 + 20  # preStop sleep + stop_grace
    box = container(web)
    assert box["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert box["securityContext"] == {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (1000, 2000)
    assert pod["securityContext"]["fsGroup"] == 2000, "the claims are writable by the pod's group"
    assert pod["automountServiceAccountToken"] is False
    assert box["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "500m", "memory": "512Mi"},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in box["volumeMounts"]
    assert {"name": "uploads", "mountPath": "/srv/uploads"} in box["volumeMounts"]
    assert {"name": "uploads", "persistentVolumeClaim": {"claimName": "shop-uploads"}} in pod["volumes"]
    assert box["image"] == f"registry.example:5000/shop/web@{DIGEST}"
    assert "imagePullSecrets" not in pod
    cache = rich[("Deployment", "shop-cache")]
    assert container(cache)["securityContext"]["capabilities"] == {
        "drop": ["ALL"],
        "add": ["NET_BIND_SERVICE"],
    }
    assert cache["spec"]["replicas"] == 1
    assert cache["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == NONROOT_UID  # no user
    worker = rich[("Deployment", "shop-worker")]
    assert worker["spec"]["strategy"] == {"type": "Recreate"}, "a singleton never runs twice"
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 10  # no port: no preStop
    assert "lifecycle" not in container(worker)
    assert {"name": "uploads", "mountPath": "/data"} in container(worker)["volumeMounts"]


def test_a_private_registry_gets_a_pull_secret_and_a_scaled_singleton_rolls(tmp_path: Path) -> None:
    scaled = RICH.replace(
        "max_unavailable = 1\n", "max_unavailable = 1\n[service.worker.scale]\nmax = 3\ntarget_rps = 50\n"
    )
    found = by_kind(manifests(source_of(parse_stack(scaled), pull_secret="regcred")))
    for key in (("Deployment", "shop-web"), ("Job", "shop-web-migrate-7")):
        assert found[key]["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
        validate_object(found[key])
    assert found[("Deployment", "shop-worker")]["spec"]["strategy"]["type"] == "RollingUpdate"


def test_service_autoscaler_budget_and_claim(rich: dict[tuple[str, str], dict[str, Any]]) -> None:
    service = rich[("Service", "shop-web")]
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 9090, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == rich[("Deployment", "shop-web")]["spec"]["selector"]["matchLabels"]
    hpa = rich[("HorizontalPodAutoscaler", "shop-web")]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "shop-web",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 120
    assert hpa["metadata"]["annotations"] == {"herd.dev/target-inflight": "20"}
    pdb = rich[("PodDisruptionBudget", "shop-web")]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == rich[("Deployment", "shop-web")]["spec"]["selector"]
    claim = rich[("PersistentVolumeClaim", "shop-uploads")]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert claim["metadata"]["annotations"] == {"herd.dev/description": "what users upload"}


def test_the_migration_job_runs_once_and_is_not_served(rich: dict[tuple[str, str], dict[str, Any]]) -> None:
    job = rich[("Job", "shop-web-migrate-7")]
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 300
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    box = pod["containers"][0]
    assert box["args"] == ["python3", "migrate.py"] and box["image"].endswith(f"/web@{DIGEST}")
    assert "readinessProbe" not in box and "ports" not in box
    assert {"name": "uploads", "mountPath": "/srv/uploads"} in box["volumeMounts"]
    selector = rich[("Service", "shop-web")]["spec"]["selector"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert not all(labels.get(k) == v for k, v in selector.items()), "the Service never routes to it"


def test_labels_follow_herdsmans_under_herd_dev(rich: dict[tuple[str, str], dict[str, Any]]) -> None:
    web = rich[("Deployment", "shop-web")]
    labels = web["spec"]["template"]["metadata"]["labels"]
    assert {k: labels[k] for k in labels if k.startswith("herd.dev/")} == {
        "herd.dev/stack": "shop",
        "herd.dev/env": "production",
        "herd.dev/service": "web",
        "herd.dev/release": "7",
    }
    assert web["spec"]["template"]["metadata"]["annotations"] == {"herd.dev/image": DIGEST}
    assert "herd.dev/release" not in web["spec"]["selector"]["matchLabels"], "a selector never changes"


def test_secrets_are_references_never_values(rich: dict[tuple[str, str], dict[str, Any]]) -> None:
    env = container(rich[("Deployment", "shop-web")])["env"]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert refs == {
        "API_KEY": {"name": "shop-secrets", "key": "API_KEY"},
        "DB_PASSWORD": {"name": "shop-secrets", "key": "DB_PASSWORD"},
    }
    values = {e["name"]: e.get("value") for e in env}
    assert values["MODE"] == "prod" and values["PORT"] == "8000" and values["HERD_RELEASE"] == "7"


def test_same_input_same_bytes() -> None:
    def export(toml: str) -> dict[str, str]:
        return rendered(manifests(source_of(parse_stack(toml))), header("shop", "production", 7))

    first = export(RICH)
    assert export(RICH) == first
    # services and env keys declared in another order give the same files
    head, rest = RICH.split("[service.web]\n", 1)
    web, others = rest.split("[service.cache]\n", 1)
    others, volumes = others.split("[volume.uploads]\n", 1)
    swapped = head + "[service.cache]\n" + others + "[service.web]\n" + web + "[volume.uploads]\n" + volumes
    assert list(parse_stack(swapped).service) != list(parse_stack(RICH).service)
    assert export(swapped) == first
    one = RICH.replace('env = { MODE = "prod" }', 'env = { MODE = "prod", A = "1" }')
    other = RICH.replace('env = { MODE = "prod" }', 'env = { A = "1", MODE = "prod" }')
    assert export(one) == export(other)


def test_hello_matches_the_golden_files() -> None:
    project = load_project(HELLO / "herd.toml")
    content = content_of(project.stack, {"web": GOLDEN_DIGEST})
    source = ExportSource(
        stack=project.stack,
        env="production",
        release=1,
        services=services_of(content),
        registry=GOLDEN_REGISTRY,
    )
    files = rendered(manifests(source), header("hello", "production", 1))
    compare_with_golden(files)
    for name in files:
        if name.endswith(".yaml"):
            assert validate_file(Path(__file__).parent.parent / "golden" / "kubernetes-hello" / name)


def test_apply_script_applies_claims_then_waits_for_the_job(tmp_path: Path) -> None:
    files = rendered(manifests(source_of(parse_stack(RICH))), header("shop", "production", 7))
    script = files["apply.sh"].splitlines()
    apply_claims = next(i for i, line in enumerate(script) if "10-persistentvolumeclaim-shop-uploads" in line)
    apply_job = next(i for i, line in enumerate(script) if "20-job-shop-web-migrate-7" in line)
    wait = next(i for i, line in enumerate(script) if line.startswith("kubectl wait"))
    rest = next(i for i, line in enumerate(script) if "30-deployment-shop-web" in line)
    assert apply_claims < apply_job < wait < rest
    assert "--for=condition=complete --timeout=360s job/shop-web-migrate-7" in script[wait]
    written = write_export(tmp_path, files)
    assert subprocess.run(["sh", "-n", str(tmp_path / "apply.sh")]).returncode == 0
    assert (tmp_path / "apply.sh").stat().st_mode & 0o111
    assert len(written) == len(files)


def test_a_new_export_removes_only_what_an_earlier_one_wrote(tmp_path: Path) -> None:
    (tmp_path / "old.yaml").write_text(MARKER + " from release 1\nkind: Job\n")
    (tmp_path / "mine.yaml").write_text("kind: ConfigMap\n")
    write_export(tmp_path, {"new.yaml": MARKER + "\n"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.yaml", "new.yaml"]


def test_long_names_are_cut_to_a_dns_label_and_stay_unique() -> None:
    long = "a" * 40
    one, two = object_name(long, "b" * 40), object_name(long, "b" * 39 + "c")
    assert len(one) <= 63 and len(two) <= 63 and one != two


def test_gaps_name_what_kubernetes_does_not_do() -> None:
    hello = {gap.key: gap for gap in kubernetes_gaps(load_project(HELLO / "herd.toml").stack)}
    assert "cannot run in a container" in hello["service.web.image.base"].message
    assert "quarantined" in hello["service.web.health"].message
    assert "snapshot" in hello["service.web.migrate"].message
    assert "ReadWriteOnce" in hello["service.web.volumes"].message
    rich = {gap.key for gap in kubernetes_gaps(parse_stack(RICH))}
    assert "service.worker.image.user" in rich, "a user name cannot be proven non-root"
    assert "service.web.image.user" not in rich, "1000:2000 is kept as it is"
    assert "service.web.scale" in rich and "service.cache.cap_add" not in rich
    placed = RICH.replace(
        "[service.web.route]",
        '[service.web.placement]\nspread = "node.labels.zone"\n\n[service.web.route]',
        1,
    )
    assert placed != RICH and "service.web.placement" not in rich
    gaps = {gap.key: gap for gap in kubernetes_gaps(parse_stack(placed))}
    assert "not exported" in gaps["service.web.placement"].message


def herd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "herdsman", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def recorded(root: Path, toml: str) -> Path:
    """A project with one deployed release in its state store (nothing runs)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "herd.toml").write_text(toml)
    state = StateStore(root / ".herd" / "state.db")
    release = state.create_release("production", content_of(parse_stack(toml)), trigger="test")
    state.set_release_status("production", release.number, "deployed")
    state.close()
    return root / "herd.toml"


def test_cli_exports_without_a_secret_value_and_checks_warn(tmp_path: Path) -> None:
    file = recorded(tmp_path / "shop", RICH)
    out = tmp_path / "k8s"
    secret = "s3cret-value-that-must-not-leak"
    no_registry = herd("-f", str(file), "export", "kubernetes", "-o", str(out))
    assert no_registry.returncode == 1
    assert "environment.production.registry" in no_registry.stderr and "herd push" in no_registry.stderr
    result = herd(
        "-f",
        str(file),
        "export",
        "kubernetes",
        "-o",
        str(out),
        "--registry",
        "registry.example:5000/shop",
        "--no-check-registry",
        env={"API_KEY": secret, "DB_PASSWORD": secret},
    )
    assert result.returncode == 0, result.stderr
    assert "release 1 of production" in result.stdout and "shop-secrets" in result.stdout
    assert "warning: service.worker.image.user" in result.stdout
    texts = [path.read_text() for path in out.iterdir()]
    assert len(texts) == 12 and not any(secret in text for text in texts)
    check = herd("-f", str(file), "check", "--for", "kubernetes")
    assert check.returncode == 0 and "warning: service.web.scale" in check.stdout
    assert "warning" not in herd("-f", str(file), "check").stdout
    bad_registry = herd("-f", str(file), "export", "kubernetes", "-o", str(out), "--registry", "nohost")
    assert bad_registry.returncode == 1 and "REGISTRY/PREFIX" in bad_registry.stderr
    bad_size = herd("-f", str(file), "export", "kubernetes", "-o", str(out), "--volume-size", "lots")
    assert bad_size.returncode == 2 and "not a storage quantity" in bad_size.stderr
    no_such = herd("-f", str(file), "export", "kubernetes", "-o", str(out), "--release", "9")
    assert no_such.returncode == 1 and "no release 9" in no_such.stderr
    help_text = herd("export", "kubernetes", "--help").stdout
    assert "apply.sh" in help_text and "secretKeyRef" not in help_text and "STACK-secrets" in help_text


def test_cli_without_a_release_says_deploy_first(tmp_path: Path) -> None:
    (tmp_path / "herd.toml").write_text(RICH)
    result = herd("-f", str(tmp_path / "herd.toml"), "export", "kubernetes", "-o", str(tmp_path / "k"))
    assert result.returncode == 1 and "herd deploy" in result.stderr and "Traceback" not in result.stderr
