"""A Swarm task on another node is checked through its service's and task's specs: the spec as
the driver creates it matches its release, and each change made behind herdsman's back (what
`docker service update` can do) is found, with the same messages as a container's check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from docker.types import ContainerSpec, Mount, Resources, SecretReference

from herdsman.drivers import swarm_evidence as evidence
from herdsman.drivers import swarm_spec as build
from herdsman.drivers.base import BASELINE_LABEL, InstanceSpec, VolumeMount

DIGEST = "sha256:" + "a" * 64
LABELS = {
    "herd.stack-id": "hello-01",
    "herd.env": "production",
    "herd.instance": "web-1-a",
    "herd.release": "1",
}


def instance(**changes: Any) -> InstanceSpec:
    base: dict[str, Any] = {
        "id": "web-1-a",
        "image": DIGEST,
        "labels": LABELS,
        "argv": ("python3", "app.py"),
        "env": {"GREETING": "hi", "API_KEY": "k"},
        "secrets": ("API_KEY",),
        "volumes": (VolumeMount("counter", Path("/x"), "/data"),),
        "memory": "256m",
    }
    return InstanceSpec(**{**base, **changes})


def as_created(spec: InstanceSpec, port: int = 41000) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ContainerSpec and Resources the swarm driver's `_start` gives Swarm for ``spec``."""
    env, _secrets = build.split_env(spec, port)
    labels = {**spec.labels, build.PORT_LABEL: str(port), build.LOG_LABEL: "/x.log", build.NODE_LABEL: "n2"}
    if spec.secrets:
        labels[build.WRAPPED_LABEL] = "1"
    mounts = [Mount(v.target, "herd-hello-01-" + v.name, type="volume") for v in spec.volumes]
    mounts.append(Mount("/tmp", None, type="tmpfs", tmpfs_size=256 * 1024**2, tmpfs_mode=0o1777))
    stack_id = spec.labels["herd.stack-id"]
    secrets = [
        SecretReference(
            "id-" + key, build.secret_name(stack_id, spec.id, key), filename=build.SECRET_FILE + key
        )
        for key in spec.secrets
    ]
    container = ContainerSpec(
        secrets=secrets,
        image=build.image_reference("127.0.0.1:5000/herdtest", "web", spec.image),
        command=build.command(spec),
        env=[f"{k}={v}" for k, v in env.items()],
        labels=labels,
        mounts=mounts,
        **build.hardening(spec),
    )
    return dict(container), dict(Resources(**build.limits(spec)))


KNOWN = {"API_KEY": "k"}  # the instance's Swarm secret holds the released value


def test_a_service_as_the_driver_creates_it_has_not_drifted() -> None:
    spec = instance()
    container, resources = as_created(spec)
    assert evidence.spec_drifts(container, resources, spec, KNOWN) == []


def test_a_canarys_fresh_baseline_has_not_drifted_for_its_label() -> None:
    """A fresh baseline starts with `herd.baseline=fresh`, which its release does not name: it is
    the canary's mark, not a change behind herdsman's back (review: it was reported as drift)."""
    started = instance(labels={**LABELS, BASELINE_LABEL: "fresh"})
    container, resources = as_created(started)
    assert evidence.spec_drifts(container, resources, instance(), KNOWN) == []
    container["Labels"] = {**container["Labels"], "herd.tier": "gold"}
    assert whats(evidence.spec_drifts(container, resources, instance(), KNOWN)) == {
        "labels": "herd.tier: added 'gold'"
    }, "other labels are still compared"


def whats(drifts: list[Any]) -> dict[str, str]:
    return {d.what: d.detail for d in drifts}


@pytest.mark.parametrize(
    ("change", "what", "said"),
    [
        (lambda c, r: c["Env"].append("DEBUG=1"), "environment", "DEBUG: added '1'"),
        (
            lambda c, r: c.update(Image="127.0.0.1:5000/herdtest/web@sha256:" + "b" * 64),
            "image",
            "runs sha256:bbb",
        ),
        (lambda c, r: c.update(Args=["--debug"]), "command", "--debug"),
        (lambda c, r: c["Labels"].update({"herd.release": "7"}), "labels", "herd.release: '1' -> '7'"),
        (lambda c, r: c.update(ReadOnly=False), "hardening", "read-only root: True -> False"),
        (lambda c, r: c.update(CapabilityAdd=["CAP_NET_ADMIN"]), "hardening", "CAP_NET_ADMIN"),
        (lambda c, r: c.update(User="root"), "hardening", "user: '' -> 'root'"),
        (lambda c, r: r.update(Limits={"MemoryBytes": 1024**3}), "limits", "'mem_limit': 1073741824"),
        (lambda c, r: c["Mounts"].pop(0), "mounts", "its release says ['/data', '/tmp']"),
        (
            lambda c, r: c["Secrets"].clear(),
            "secrets",
            "gets [], its release says ['herd-hello-01-web-1-a-API_KEY']",
        ),
    ],
)
def test_each_change_behind_herdsmans_back_is_found(change: Any, what: str, said: str) -> None:
    spec = instance()
    container, resources = as_created(spec)
    change(container, resources)
    found = whats(evidence.spec_drifts(container, resources, spec, KNOWN))
    assert what in found and said in found[what], found


def test_a_secret_is_judged_by_its_swarm_secret_and_never_shown() -> None:
    spec = instance()
    container, resources = as_created(spec)
    found = evidence.spec_drifts(container, resources, spec, {"API_KEY": "\0another value"})
    assert [d.what for d in found] == ["environment"]
    assert "k" not in found[0].detail.replace("API_KEY", "")  # no value of the secret


def test_without_launch_only_what_a_container_check_does_not_cover() -> None:
    spec = instance()
    container, resources = as_created(spec)
    container["Env"].append("DEBUG=1")  # the local container's own check reports this one
    container["ReadOnly"] = False
    found = whats(evidence.spec_drifts(container, resources, spec, KNOWN, launch=False))
    assert list(found) == ["hardening"]


def test_what_could_not_be_checked_is_said_and_each_finding_comes_once() -> None:
    note = evidence.not_checked("node-2")
    assert not note.checked and "node-2" in note.detail and "not checked" in note.detail
    spec = instance()
    container, resources = as_created(spec)
    container["Env"].append("DEBUG=1")
    twice = evidence.spec_drifts(container, resources, spec, KNOWN) * 2
    assert len(evidence.unique([*twice, note])) == 2
